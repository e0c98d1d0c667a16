"""CORE: centring, prompts, continuation spans and each task type's rule on hand-checked cases."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainer.eval.core import (
    CoreTask,
    CoreTaskError,
    ScoredSequence,
    TaskResult,
    build_sequences,
    centered,
    core_score,
    decide,
    evaluate_task,
    fewshot_indices,
    merge_results,
    prompt_pairs,
    score_sequences,
)

MC_ITEMS = [
    {"query": "The capital of France is", "choices": ["Paris", "Rome"], "gold": 0},
    {"query": "Two plus two is", "choices": ["three", "four", "five"], "gold": 1},
    {"query": "The sky is", "choices": ["blue", "green"], "gold": 0},
    {"query": "Cats say", "choices": ["woof", "meow"], "gold": 1},
]
SCHEMA_ITEMS = [
    {
        "context_options": ["Tom gave Ann a gift, so Tom", "Tom gave Ann a gift, so Ann"],
        "continuation": "was generous.",
        "gold": 0,
    },
    {
        "context_options": [
            "The ball broke the window because the ball",
            "The ball broke the window because the window",
        ],
        "continuation": "was fragile.",
        "gold": 1,
    },
]
LM_ITEMS = [
    {"context": "one two three", "continuation": "four"},
    {"context": "a b c", "continuation": "d"},
]


def test_centring_and_core():
    assert centered(0.25, 25.0) == 0.0
    assert centered(1.0, 25.0) == 1.0
    assert centered(0.625, 25.0) == pytest.approx(0.5)
    assert centered(0.5, 0.0) == 0.5
    assert centered(0.25, 50.0) == pytest.approx(-0.5)  # below chance is negative
    results = [TaskResult("a", 0.625, centered(0.625, 25), 8), TaskResult("b", 0.5, centered(0.5, 0), 2)]
    assert core_score(results) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        core_score([])


def test_fewshot_is_fixed_per_example_and_never_the_example():
    task = CoreTask("mc", "multiple_choice", MC_ITEMS, num_fewshot=2)
    for i in range(len(MC_ITEMS)):
        shots = fewshot_indices(task, i)
        assert len(shots) == 2 and i not in shots
        assert shots == fewshot_indices(task, i)  # the same on every call (seed 1234 + i)


def test_prompts_of_each_type():
    mc = CoreTask("mc", "multiple_choice", MC_ITEMS, num_fewshot=1)
    shot = MC_ITEMS[fewshot_indices(mc, 0)[0]]
    head = f"{shot['query']} {shot['choices'][shot['gold']]}\n\n"
    assert prompt_pairs(mc, 0) == [
        (head + "The capital of France is", head + "The capital of France is Paris"),
        (head + "The capital of France is", head + "The capital of France is Rome"),
    ]
    schema = CoreTask("wino", "schema", SCHEMA_ITEMS)
    assert prompt_pairs(schema, 0) == [
        ("Tom gave Ann a gift, so Tom", "Tom gave Ann a gift, so Tom was generous."),
        ("Tom gave Ann a gift, so Ann", "Tom gave Ann a gift, so Ann was generous."),
    ]
    lm = CoreTask("lm", "language_modeling", LM_ITEMS, continuation_delimiter=" ")
    assert prompt_pairs(lm, 1) == [("a b c", "a b c d")]


def test_continuation_span_holds_the_continuation(tiny_tokenizer):
    task = CoreTask("mc", "multiple_choice", MC_ITEMS)
    seqs = build_sequences(task, tiny_tokenizer, [0], max_len=256)
    assert [tiny_tokenizer.decode(s.ids[s.start :]) for s in seqs] == [" Paris", " Rome"]
    assert all(s.ids[0] == tiny_tokenizer.bos_id for s in seqs)
    # Over-long prompts lose context from the left, never the continuation.
    limit = max(len(s.ids) - s.start for s in seqs) + 2
    cropped = build_sequences(task, tiny_tokenizer, [0], max_len=limit)
    assert all(
        len(s.ids) == limit and tiny_tokenizer.decode(s.ids[s.start :]) in (" Paris", " Rome")
        for s in cropped
    )


def test_each_task_type_decides_by_its_rule():
    mc = CoreTask("mc", "multiple_choice", MC_ITEMS[:2])
    seqs = [ScoredSequence(0, 0, [], 0), ScoredSequence(0, 1, [], 0)]
    seqs += [ScoredSequence(1, o, [], 0) for o in range(3)]
    # lowest mean loss wins: item 0 picks option 1 (wrong), item 1 picks option 1 (right)
    scores = [(2.0, False), (1.0, False), (3.0, False), (0.5, False), (0.7, False)]
    assert decide(mc, seqs, scores) == {0: False, 1: True}
    schema = CoreTask("wino", "schema", SCHEMA_ITEMS)
    seqs = [ScoredSequence(i, o, [], 0) for i in range(2) for o in range(2)]
    assert decide(schema, seqs, [(1.0, False), (1.5, False), (0.9, False), (0.8, False)]) == {
        0: True,
        1: True,
    }
    lm = CoreTask("lm", "language_modeling", LM_ITEMS)
    seqs = [ScoredSequence(0, 0, [], 0), ScoredSequence(1, 0, [], 0)]
    assert decide(lm, seqs, [(9.0, True), (0.1, False)]) == {0: True, 1: False}  # exactness, not loss


def test_batched_scores_equal_one_at_a_time_and_the_hand_loss(tiny_model, tiny_tokenizer):
    task = CoreTask("mc", "multiple_choice", MC_ITEMS, num_fewshot=1)
    seqs = build_sequences(task, tiny_tokenizer, range(len(MC_ITEMS)), max_len=256)
    batched = score_sequences(tiny_model, seqs, batch_rows=8, pad_id=tiny_tokenizer.bos_id)
    single = score_sequences(tiny_model, seqs, batch_rows=1, pad_id=tiny_tokenizer.bos_id, share_prefix=False)
    s = seqs[3]
    with torch.no_grad():
        logits = tiny_model(torch.tensor([s.ids]))[0]
    hand = float(F.cross_entropy(logits[s.start - 1 : -1], torch.tensor(s.ids[s.start :])))
    assert batched[3][0] == pytest.approx(hand, abs=1e-4)
    for (a, ea), (b, eb) in zip(batched, single, strict=True):
        assert a == pytest.approx(b, abs=1e-4) and ea == eb


@pytest.mark.parametrize("max_len", [256, 24])  # 24: sequences lose tokens from the left
@pytest.mark.parametrize("kind", ["multiple_choice", "schema"])
def test_shared_prefix_rows_score_like_separate_sequences(tiny_model, tiny_tokenizer, kind, max_len):
    """Options of one example packed in one row (shared few-shot prefix, a tail each at its own
    positions) give the losses and exactness that separate causal rows give."""
    task = CoreTask(kind, kind, MC_ITEMS if kind == "multiple_choice" else SCHEMA_ITEMS, num_fewshot=1)
    seqs = build_sequences(task, tiny_tokenizer, range(len(task.items)), max_len=max_len)
    pad = tiny_tokenizer.bos_id
    separate = score_sequences(tiny_model, seqs, batch_rows=1, pad_id=pad, share_prefix=False)
    for rows in (1, 3):
        shared = score_sequences(tiny_model, seqs, batch_rows=rows, pad_id=pad, share_prefix=True)
        for (a, ea), (b, eb) in zip(shared, separate, strict=True):
            assert a == pytest.approx(b, abs=1e-4) and ea == eb


def test_uniform_model_ties_pick_the_first_option(tiny_tokenizer):
    """A head of zeros predicts uniformly: every choice has mean loss ln(V), the first one wins,
    so accuracy is the share of items whose gold is 0 — here 2 of 4 — and centred against 25%."""
    from chatforge.model import GPT, GPTConfig

    model = GPT(
        GPTConfig(
            vocab_size=tiny_tokenizer.vocab_size,
            n_layer=1,
            n_embd=64,
            n_head=1,
            n_kv_head=1,
            sequence_len=128,
        )
    )
    torch.nn.init.zeros_(model.lm_head.weight)
    task = CoreTask("mc", "multiple_choice", MC_ITEMS, random_baseline_pct=25.0)
    result = evaluate_task(model, tiny_tokenizer, task, batch_rows=4)
    assert (result.accuracy, result.n_examples) == (0.5, 4)
    assert result.centered == pytest.approx((0.5 - 0.25) / 0.75)


def test_shards_merge_to_the_whole(tiny_model, tiny_tokenizer):
    task = CoreTask("mc", "multiple_choice", MC_ITEMS, num_fewshot=1, random_baseline_pct=25.0)
    whole = evaluate_task(tiny_model, tiny_tokenizer, task)
    shares = [evaluate_task(tiny_model, tiny_tokenizer, task, rank=r, world_size=2) for r in range(2)]
    merged = merge_results(task, shares)
    assert merged.correct == whole.correct and merged.accuracy == whole.accuracy


def test_bad_items_are_refused_with_the_task_and_item():
    with pytest.raises(CoreTaskError, match=r"'mc' item 0: gold 5"):
        CoreTask("mc", "multiple_choice", [{"query": "q", "choices": ["a", "b"], "gold": 5}])
    with pytest.raises(CoreTaskError, match="missing"):
        CoreTask("lm", "language_modeling", [{"context": "q"}])
    with pytest.raises(CoreTaskError, match="type must be"):
        CoreTask("x", "generative", [])


def test_shared_prefix_rows_keep_a_models_sliding_window(tiny_tokenizer):
    """The shared-prefix attention honours each layer's window (positions counted in each
    sequence): a model whose first layer sees 6 tokens scores packed rows like separate ones."""
    from chatforge.model import GPT, GPTConfig

    torch.manual_seed(1)
    config = GPTConfig(
        vocab_size=tiny_tokenizer.vocab_size, n_layer=2, n_embd=64, n_head=2, n_kv_head=1, sequence_len=256,
        window_pattern="S", short_window=6, value_embeds=True,
    )  # fmt: skip
    model = GPT(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    model.eval()
    task = CoreTask("mc", "multiple_choice", MC_ITEMS, num_fewshot=1)
    seqs = build_sequences(task, tiny_tokenizer, range(len(MC_ITEMS)), max_len=256)
    assert min(len(s.ids) for s in seqs) > 6
    pad = tiny_tokenizer.bos_id
    separate = score_sequences(model, seqs, batch_rows=1, pad_id=pad, share_prefix=False)
    shared = score_sequences(model, seqs, batch_rows=3, pad_id=pad, share_prefix=True)
    for (a, ea), (b, eb) in zip(shared, separate, strict=True):
        assert a == pytest.approx(b, abs=1e-4) and ea == eb
