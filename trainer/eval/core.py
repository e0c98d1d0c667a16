"""CORE, the DCLM benchmark of base models: 22 tasks, three task types, one centred average.

DCLM (Li et al., 2024, appendix) scores a base model by the likelihood it gives to text:
- multiple choice: one context, several continuations (the choices); the model's answer is the
  continuation with the lowest mean loss per token;
- schema: several contexts (e.g. the two fillers of a WinoGrande blank), one continuation; the
  answer is the context under which the continuation has the lowest mean loss;
- language modelling: one context and one continuation; correct when greedy decoding reproduces
  every continuation token exactly.

Each example is preceded by `num_fewshot` solved examples of the same task, drawn with a seed fixed
per example (1234 + index, as nanochat does), so every run sees the same prompts. A task's accuracy
is centred against its random baseline, `(acc - b) / (1 - b)`: 0 is chance, 1 is perfect, and
tasks with 2 and 4 choices count alike. CORE is the mean of the centred accuracies.

Sequences from many examples are scored in one forward pass (`batch_rows` rows, right-padded:
the model is causal, so padding after a sequence cannot change its losses), and the options of one
example share a row: their common prefix (the few-shot prompt) is computed once.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F

from chatforge.model import GPT, autocast_dtype
from chatforge.tokenizer import Tokenizer

TaskType = Literal["multiple_choice", "schema", "language_modeling"]
TASK_TYPES: tuple[str, ...] = ("multiple_choice", "schema", "language_modeling")
FEWSHOT_SEED = 1234  # nanochat's base seed: example i draws its shots with random.Random(1234 + i)


class CoreTaskError(ValueError):
    """A task definition or an example that does not fit its task type; names the task and item."""


@dataclass(frozen=True)
class CoreTask:
    """One CORE task: its examples in DCLM's jsonl schema and how to prompt and score them.

    Examples: multiple_choice `{"query", "choices", "gold"}`; schema `{"context_options",
    "continuation", "gold"}`; language_modeling `{"context", "continuation"}`.
    """

    label: str
    task_type: str
    items: Sequence[Mapping[str, Any]]
    num_fewshot: int = 0
    continuation_delimiter: str = " "
    random_baseline_pct: float = 0.0  # DCLM's CSV gives chance accuracy in percent

    def __post_init__(self) -> None:
        if self.task_type not in TASK_TYPES:
            raise CoreTaskError(
                f"task {self.label!r}: type must be one of {TASK_TYPES}, got {self.task_type!r}"
            )
        if not 0 <= self.random_baseline_pct < 100:
            raise CoreTaskError(f"task {self.label!r}: random baseline must be in [0, 100) percent")
        if self.num_fewshot < 0:
            raise CoreTaskError(f"task {self.label!r}: num_fewshot must be >= 0")
        for i, item in enumerate(self.items):
            _check_item(self, i, item)


@dataclass
class TaskResult:
    label: str
    accuracy: float
    centered: float
    n_examples: int
    correct: dict[int, bool] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "accuracy": self.accuracy,
            "centered": self.centered,
            "n": self.n_examples,
        }


@dataclass(frozen=True)
class ScoredSequence:
    """One sequence to score: `ids[start:]` is the continuation, the rest its context."""

    item: int
    option: int
    ids: list[int]
    start: int


def centered(accuracy: float, random_baseline_pct: float) -> float:
    """DCLM's centring: 0 at chance, 1 at perfect."""
    b = random_baseline_pct / 100.0
    return (accuracy - b) / (1.0 - b)


def core_score(results: Sequence[TaskResult]) -> float:
    """CORE: the mean centred accuracy over the tasks."""
    if not results:
        raise ValueError("CORE needs at least one task result")
    return sum(r.centered for r in results) / len(results)


# --- prompts ------------------------------------------------------------------------------------


def fewshot_indices(task: CoreTask, index: int) -> list[int]:
    """The solved examples shown before example `index`: fixed per example, never itself."""
    k = min(task.num_fewshot, len(task.items) - 1)
    if k <= 0:
        return []
    others = [j for j in range(len(task.items)) if j != index]
    return random.Random(FEWSHOT_SEED + index).sample(others, k)


def prompt_pairs(task: CoreTask, index: int) -> list[tuple[str, str]]:
    """(context, context + continuation) texts, one per option of example `index`."""
    d = task.continuation_delimiter
    item = task.items[index]
    shots = [task.items[j] for j in fewshot_indices(task, index)]
    if task.task_type == "multiple_choice":
        head = "".join(f"{s['query']}{d}{s['choices'][s['gold']]}\n\n" for s in shots)
        return [(head + item["query"], f"{head}{item['query']}{d}{c}") for c in item["choices"]]
    if task.task_type == "schema":
        head = "".join(f"{s['context_options'][s['gold']]}{d}{s['continuation']}\n\n" for s in shots)
        return [(head + ctx, f"{head}{ctx}{d}{item['continuation']}") for ctx in item["context_options"]]
    head = "".join(f"{s['context']}{d}{s['continuation']}\n\n" for s in shots)
    return [(head + item["context"], f"{head}{item['context']}{d}{item['continuation']}")]


def build_sequences(
    task: CoreTask, tokenizer: Tokenizer, indices: Sequence[int], max_len: int
) -> list[ScoredSequence]:
    """Tokenized sequences for the given examples, with their continuation spans.

    The continuation starts where the tokens of context-alone and context+continuation part ways,
    so a token the tokenizer merges across the boundary counts as continuation. A sequence longer
    than the model's context loses tokens from the left (the continuation is always kept).
    """
    out = []
    for i in indices:
        pairs = prompt_pairs(task, i)
        encoded = tokenizer.encode_batch([t for pair in pairs for t in pair])
        for option in range(len(pairs)):
            context = [tokenizer.bos_id, *encoded[2 * option]]
            full = [tokenizer.bos_id, *encoded[2 * option + 1]]
            start = _common_prefix(context, full)
            if start == len(full):
                raise CoreTaskError(f"task {task.label!r} item {i}: the continuation encodes to no tokens")
            if len(full) > max_len:
                cut = len(full) - max_len
                if start - cut < 1:
                    raise CoreTaskError(
                        f"task {task.label!r} item {i}: the continuation alone exceeds {max_len} tokens"
                    )
                full, start = full[cut:], start - cut
            out.append(ScoredSequence(i, option, full, start))
    return out


# --- scoring ------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_task(
    model: GPT,
    tokenizer: Tokenizer,
    task: CoreTask,
    *,
    batch_rows: int = 32,
    max_examples: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    share_prefix: bool = True,
) -> TaskResult:
    """Accuracy on the task's examples (the first `max_examples`), this rank's share of them
    (index % world_size == rank); merge shares with `merge_results`."""
    n = len(task.items) if max_examples is None else min(max_examples, len(task.items))
    indices = [i for i in range(n) if i % world_size == rank]
    sequences = build_sequences(task, tokenizer, indices, model.config.sequence_len)
    scores = score_sequences(
        model, sequences, batch_rows=batch_rows, pad_id=tokenizer.bos_id, share_prefix=share_prefix
    )
    correct = decide(task, sequences, scores)
    return _result(task, correct)


@torch.no_grad()
def score_sequences(
    model: GPT,
    sequences: Sequence[ScoredSequence],
    *,
    batch_rows: int,
    pad_id: int,
    share_prefix: bool = True,
) -> list[tuple[float, bool]]:
    """(mean continuation loss, greedy-exact) per sequence, in the order given.

    With `share_prefix`, the options of one example are one row: the tokens they share (the few-shot
    prompt and the query) once, then each option's own tail, attending to the shared part and to
    itself only, at the positions it would have alone. A 5-shot, 4-choice example then costs about a
    quarter of the tokens. Rows are batched longest first, so a batch pads little.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows = _rows(sequences, share_prefix)
    rows.sort(key=lambda r: -r.width)
    out: list[tuple[float, bool]] = [(0.0, False)] * len(sequences)
    for b in range(0, len(rows), batch_rows):
        batch = rows[b : b + batch_rows]
        ids, positions, segments = _pack(batch, pad_id)
        ids = ids.to(device)
        attention = None
        if any(len(r.members) > 1 for r in batch):
            positions, segments = positions.to(device), segments.to(device)
            attention = _SharedPrefixAttention(segments, positions)
        with torch.autocast(device.type, dtype=autocast_dtype(device), enabled=device.type == "cuda"):
            if attention is None:
                logits = model(ids)
            else:
                logits = model(ids, positions=positions, attention=attention)
        logits = logits.float()
        for r, row in enumerate(batch):
            for k, offset in zip(row.members, row.offsets, strict=True):
                s = sequences[k]
                # Row index of the logit at sequence position p: shared part as is, tail shifted.
                where = [
                    p if p < row.shared else offset + p - row.shared
                    for p in range(s.start - 1, len(s.ids) - 1)
                ]
                span = logits[r, where]
                targets = torch.tensor(s.ids[s.start :], device=device)
                loss = float(F.cross_entropy(span, targets))
                exact = bool((span.argmax(-1) == targets).all())
                out[k] = (loss, exact)
    model.train(was_training)
    return out


@dataclass(frozen=True)
class _Row:
    """One row of a forward pass: `tokens[:shared]` common to every member sequence, then each
    member's tail (its tokens past `shared`) at `offsets`."""

    tokens: list[int]
    shared: int
    members: list[int]
    offsets: list[int]

    @property
    def width(self) -> int:
        return len(self.tokens)


def _rows(sequences: Sequence[ScoredSequence], share_prefix: bool) -> list[_Row]:
    if not share_prefix:
        return [_Row(s.ids, len(s.ids), [k], [len(s.ids)]) for k, s in enumerate(sequences)]
    by_item: dict[int, list[int]] = {}
    for k, s in enumerate(sequences):
        by_item.setdefault(s.item, []).append(k)
    rows = []
    for members in by_item.values():
        first = sequences[members[0]].ids
        # Shared: the common prefix, never past a continuation start (the scored tokens stay apart).
        shared = min(min(sequences[k].start, _common_prefix(first, sequences[k].ids)) for k in members)
        tokens, offsets = list(first[:shared]), []
        for k in members:
            offsets.append(len(tokens))
            tokens.extend(sequences[k].ids[shared:])
        rows.append(_Row(tokens, shared, members, offsets))
    return rows


def _pack(batch: Sequence[_Row], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, rotary positions and segments (-1 shared, i for tail i, -2 padding)."""
    width = max(r.width for r in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(batch), width), dtype=torch.long)
    segments = torch.full((len(batch), width), -2, dtype=torch.long)
    for r, row in enumerate(batch):
        ids[r, : row.width] = torch.tensor(row.tokens)
        positions[r, : row.shared] = torch.arange(row.shared)
        segments[r, : row.shared] = -1
        ends = [*row.offsets[1:], row.width]
        for i, (start, end) in enumerate(zip(row.offsets, ends, strict=True)):
            positions[r, start:end] = torch.arange(row.shared, row.shared + end - start)
            segments[r, start:end] = i
    return ids, positions, segments


class _SharedPrefixAttention:
    """Causal attention in which a tail sees the shared part and its own earlier tokens only
    (the model's `AttentionBackend` seam; no cache), within a layer's sliding window if it has one
    (`positions` are each token's position in its own sequence)."""

    def __init__(self, segments: torch.Tensor, positions: torch.Tensor):
        t = segments.size(1)
        causal = torch.ones(t, t, dtype=torch.bool, device=segments.device).tril()
        same = segments[:, :, None] == segments[:, None, :]
        shared = (segments == -1)[:, None, :]
        self.mask = (causal & (same | shared))[:, None]  # (B, 1, T, T)
        self.back = (positions[:, :, None] - positions[:, None, :])[:, None]  # positions back, (B, 1, T, T)
        self.windowed: dict[int, torch.Tensor] = {}

    def attend(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, window: int | None = None
    ) -> torch.Tensor:
        mask = self.mask
        if window is not None:
            if window not in self.windowed:
                self.windowed[window] = self.mask & (self.back < window)
            mask = self.windowed[window]
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=k.size(1) != q.size(1))
        return y.transpose(1, 2)


def decide(
    task: CoreTask, sequences: Sequence[ScoredSequence], scores: Sequence[tuple[float, bool]]
) -> dict[int, bool]:
    """Per example: right or wrong, by the task type's rule."""
    by_item: dict[int, list[tuple[int, float, bool]]] = {}
    for s, (loss, exact) in zip(sequences, scores, strict=True):
        by_item.setdefault(s.item, []).append((s.option, loss, exact))
    correct = {}
    for i, options in by_item.items():
        if task.task_type == "language_modeling":
            correct[i] = options[0][2]
        else:
            best = min(options, key=lambda o: o[1])[0]  # ties go to the first option
            correct[i] = best == task.items[i]["gold"]
    return correct


def merge_results(task: CoreTask, shares: Sequence[TaskResult]) -> TaskResult:
    """One result from the per-rank shares of a task."""
    correct: dict[int, bool] = {}
    for share in shares:
        correct.update(share.correct)
    return _result(task, correct)


def _result(task: CoreTask, correct: dict[int, bool]) -> TaskResult:
    n = len(correct)
    accuracy = sum(correct.values()) / n if n else 0.0
    return TaskResult(task.label, accuracy, centered(accuracy, task.random_baseline_pct), n, correct)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _check_item(task: CoreTask, i: int, item: Mapping[str, Any]) -> None:
    where = f"task {task.label!r} item {i}"
    need = {
        "multiple_choice": ("query", "choices", "gold"),
        "schema": ("context_options", "continuation", "gold"),
        "language_modeling": ("context", "continuation"),
    }[task.task_type]
    missing = [k for k in need if k not in item]
    if missing:
        raise CoreTaskError(f"{where}: missing {missing} for a {task.task_type} task")
    options = item.get("choices", item.get("context_options"))
    if options is not None:
        if not isinstance(options, Sequence) or isinstance(options, str) or len(options) < 2:
            raise CoreTaskError(f"{where}: needs a list of at least 2 options")
        if not isinstance(item["gold"], int) or not 0 <= item["gold"] < len(options):
            raise CoreTaskError(f"{where}: gold {item['gold']!r} does not index its {len(options)} options")
