"""Serving benchmark: our engine against Hugging Face `transformers` generate, same sizes, same run.

Both models have random weights and the same shape (layers, width, heads, vocabulary, context);
the `transformers` one is a LlamaForCausalLM with an MLP sized to the same parameter count (it need
not match our numerics, only the work). Nothing stops early on either side: greedy, no EOS, no
stop ids, and each side is checked to have produced exactly the tokens asked for. N requests arrive
together, prompt lengths drawn uniformly from a range. Measured for N = 1, 8, 32:

- the headline workload: every request asks for the same number of new tokens. Ours (continuous
  batching, paged KV cache) against `transformers` `generate` on all N as one left-padded batch
  with its attention mask, `max_new_tokens` = that number: both produce N x that many tokens;
- chat-like traffic: output lengths drawn from a range too. `generate` runs the padded batch until
  the longest request is done, so only the tokens each request asked for count; `transformers` one
  request at a time as a second reference;
- generated tokens/s: on one CPU thread (the default) per CPU-second of this process, which a
  shared machine cannot skew, else per wall second;
- on the chat-like traffic, our time to first token and inter-token latency, p50/p99, and KV memory:
  our peak blocks in use against the tokens they hold (waste inside blocks), and against the
  contiguous cache a padded batch keeps (N x longest sequence).

The last line is the headline: ours against the padded batch at N = 32, same prompts, same
`max_new_tokens`, same token count.

    python bench/serving.py [--quick] [--threads N] [--device cuda]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "inference-svc"))

from inference_svc.config import EngineConfig  # noqa: E402
from inference_svc.engine import LLMEngine  # noqa: E402

from chatforge.contracts.sampling import SamplingParams  # noqa: E402
from chatforge.model import GPT, GPTConfig  # noqa: E402


@dataclass(frozen=True)
class Workload:
    n_layer: int
    n_embd: int
    n_head: int
    vocab_size: int
    prompt_len: tuple[int, int]  # uniform range, tokens
    output_len: tuple[int, int]
    one_by_one_cap: int  # transformers one-by-one runs at most this many requests (its rate is per request)


FULL = Workload(
    n_layer=4,
    n_embd=256,
    n_head=4,
    vocab_size=8192,
    prompt_len=(32, 512),
    output_len=(32, 512),
    one_by_one_cap=32,
)
QUICK = Workload(
    n_layer=2,
    n_embd=128,
    n_head=2,
    vocab_size=4096,
    prompt_len=(16, 256),
    output_len=(16, 256),
    one_by_one_cap=4,
)


CPU_CLOCK = False  # set in main(): throughput per CPU-second instead of per wall-clock second


@dataclass
class Run:
    tokens: int
    seconds: float  # wall clock
    cpu_seconds: float  # this process's CPU time: what the work cost, whoever else shares the machine
    ttft_s: list[float] | None = None
    itl_s: list[float] | None = None
    kv_waste: float | None = None  # time-averaged share of allocated KV slots holding no token
    kv_peak_slots: int | None = None

    @property
    def tok_s(self) -> float:
        return self.tokens / (self.cpu_seconds if CPU_CLOCK else self.seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller model and lengths (< 1 minute)")
    # One thread by default: the comparison is about the engines, not BLAS threading, and on a
    # shared machine spinning OpenMP threads make multi-threaded timings swing by 10x or more.
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    try:
        import transformers  # noqa: F401  # the reference side
    except ImportError:
        print("transformers is not installed: pip install -e '.[dev]'", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    global CPU_CLOCK
    # Single-threaded on CPU, tokens per CPU-second measure the engines and not the neighbours;
    # with more threads (or a GPU) only wall-clock time is meaningful.
    CPU_CLOCK = torch.get_num_threads() == 1 and args.device == "cpu"
    w = QUICK if args.quick else FULL
    device = torch.device(args.device)
    ours, hf = build_models(w, device)
    print(
        f"model: {w.n_layer} layers, width {w.n_embd}, {w.n_head} heads, vocab {w.vocab_size}; "
        f"ours {ours.num_params() / 1e6:.1f}M params, transformers {hf.num_parameters() / 1e6:.1f}M; "
        f"device {device}, {torch.get_num_threads()} threads; throughput per "
        + ("CPU-second of this process (latencies are wall clock)" if CPU_CLOCK else "wall-clock second")
    )
    print(
        f"workload: prompts {w.prompt_len[0]}-{w.prompt_len[1]} tokens, outputs {w.output_len[0]}-{w.output_len[1]}"
    )

    results = {}
    fixed_len = (w.output_len[0] + w.output_len[1]) // 2
    for n in (1, 8, 32):
        prompts, outputs = chat_like(w, n)
        fixed = [fixed_len] * n
        ours_fixed = run_ours(ours, prompts, fixed)
        padded_fixed = run_hf_padded(hf, prompts, fixed, device)
        ours_run = run_ours(ours, prompts, outputs)
        one = run_hf_one_by_one(hf, prompts[: w.one_by_one_cap], outputs[: w.one_by_one_cap], device)
        padded = run_hf_padded(hf, prompts, outputs, device)
        contiguous = n * max(len(p) + o for p, o in zip(prompts, outputs, strict=True))
        peak = ours_run.kv_peak_slots or 0
        results[n] = (ours_fixed, padded_fixed, ours_run, one, padded)
        print(
            f"N={n:>2}: {fixed_len} new tokens each: ours {ours_fixed.tok_s:7.1f} tok/s | "
            f"transformers padded batch {padded_fixed.tok_s:7.1f} tok/s ({ours_fixed.tok_s / padded_fixed.tok_s:4.1f}x)"
        )
        print(
            f"       chat-like lengths: ours {ours_run.tok_s:7.1f} tok/s | padded batch {padded.tok_s:7.1f} tok/s "
            f"({ours_run.tok_s / padded.tok_s:4.1f}x) | one-by-one {one.tok_s:7.1f} tok/s ({ours_run.tok_s / one.tok_s:5.1f}x)"
        )
        print(
            f"       TTFT p50 {pct(ours_run.ttft_s, 50) * 1e3:7.1f} ms  p99 {pct(ours_run.ttft_s, 99) * 1e3:7.1f} ms | "
            f"ITL p50 {pct(ours_run.itl_s, 50) * 1e3:6.2f} ms  p99 {pct(ours_run.itl_s, 99) * 1e3:6.2f} ms"
        )
        print(
            f"       KV: waste inside blocks {ours_run.kv_waste:.1%} (time-averaged); peak {peak} slots "
            f"vs {contiguous} for a contiguous padded cache ({1 - peak / contiguous:.0%} less)"
        )

    ours_fixed32, padded_fixed32, ours32, one32, padded32 = results[32]
    print(
        f"serving_vs_one_by_one: {ours32.tok_s:.0f} tok/s ({ours32.tok_s / one32.tok_s:.1f}x vs transformers "
        f"one request at a time, chat-like lengths; goal >= 10x)"
    )
    print(
        f"serving_chat_lengths: {ours32.tok_s:.0f} tok/s ({ours32.tok_s / padded32.tok_s:.1f}x vs transformers "
        f"padded batch of 32, counting the tokens asked for; goal >= 3x)"
    )
    print(f"serving_kv_waste: {ours32.kv_waste:.1%} of allocated KV slots (goal < 4%)")
    print(
        f"serving: {ours_fixed32.tok_s:.0f} tok/s ({ours_fixed32.tok_s / padded_fixed32.tok_s:.1f}x vs transformers "
        f"generate, padded batch of 32, same prompts, {fixed_len} new tokens each; goal >= 2x)"
    )
    return 0


def build_models(w: Workload, device: torch.device, dtype: torch.dtype = torch.float32) -> tuple[GPT, Any]:
    """Ours and a `transformers` Llama of the same shape and parameter count, random weights, eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    max_len = w.prompt_len[1] + w.output_len[1]
    config = GPTConfig(
        vocab_size=w.vocab_size,
        n_layer=w.n_layer,
        n_embd=w.n_embd,
        n_head=w.n_head,
        n_kv_head=w.n_head,
        sequence_len=max_len,
    )
    ours = GPT(config)
    with torch.no_grad():  # nanochat's init zeroes the output projections; random values make the work real
        for name, weight in ours.named_parameters():
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(weight, std=0.02)
    ours = ours.to(device, dtype).eval()
    hf_config = LlamaConfig(
        vocab_size=w.vocab_size,
        hidden_size=w.n_embd,
        intermediate_size=8 * w.n_embd // 3,  # 3 matrices of h x 8h/3 = our 2 of h x 4h
        num_hidden_layers=w.n_layer,
        num_attention_heads=w.n_head,
        num_key_value_heads=w.n_head,
        max_position_embeddings=max_len,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=None,
    )
    hf = LlamaForCausalLM(hf_config)
    hf.to(device, dtype)  # type: ignore[arg-type]  # transformers' wrapper around `to` is typed wrongly
    hf.eval()
    return ours, hf


def chat_like(w: Workload, n: int) -> tuple[list[list[int]], list[int]]:
    """N requests arriving together: prompt ids and output lengths drawn uniformly from the workload's
    ranges, the same for a given N in every run."""
    rng = random.Random(n)
    prompts = [[rng.randrange(1, w.vocab_size) for _ in range(rng.randint(*w.prompt_len))] for _ in range(n)]
    return prompts, [rng.randint(*w.output_len) for _ in range(n)]


def greedy(max_tokens: int) -> SamplingParams:
    """Greedy, as `generate(do_sample=False)`, said explicitly: the shared default samples (temperature 0.8)."""
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, tools=False)
    assert params.greedy and not params.stop_token_ids and not params.stop
    return params


def run_ours(
    model: GPT, prompts: list[list[int]], outputs: list[int], config: EngineConfig | None = None
) -> Run:
    """All requests added at once, the engine stepped until done; each token stamped when its step returns."""
    config = config or EngineConfig(kv_cache_bytes=256 * 2**20, max_num_batched_tokens=1024)
    engine = LLMEngine(model, config)
    # Warm-up: a prefill over several blocks, a short one, then decodes, so kernels (and, on CUDA,
    # FlexAttention's compiled variants) exist before the clock starts.
    for prompt in ([1, 2, 3], list(range(1, 41))):
        engine.add_request(prompt, greedy(2))
    while engine.has_work():
        engine.step()
    _synchronize(model.wte.weight.device)
    start, cpu = time.perf_counter(), time.process_time()
    ids = [engine.add_request(p, greedy(o)) for p, o in zip(prompts, outputs, strict=True)]
    stamps: dict[str, list[float]] = {i: [] for i in ids}
    wasted = allocated = 0
    peak = 0
    while engine.has_work():
        items = engine.step()
        now = time.perf_counter()
        for rid, new in items.items():
            stamps[rid].extend(now for x in new if x.token_id is not None)
        slots = sum(len(b) for b in engine.kv.req_to_blocks.values()) * engine.config.block_size
        held = sum(r.num_computed_tokens for r in engine.scheduler.running)
        if slots:
            allocated += slots
            wasted += slots - held
            peak = max(peak, slots)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu  # tokens are on the host by now
    ttft = [s[0] - start for s in stamps.values()]
    itl = [b - a for s in stamps.values() for a, b in zip(s, s[1:], strict=False)]
    tokens = sum(len(s) for s in stamps.values())
    assert tokens == sum(outputs), (tokens, sum(outputs))
    return Run(tokens, seconds, cpu, ttft, itl, wasted / allocated, peak)


@torch.inference_mode()
def run_hf_one_by_one(model, prompts: list[list[int]], outputs: list[int], device: torch.device) -> Run:
    _hf_generate(model, [[1, 2, 3]], 2, device)  # warm-up
    _synchronize(device)
    start, cpu = time.perf_counter(), time.process_time()
    for prompt, n in zip(prompts, outputs, strict=True):
        _hf_generate(model, [prompt], n, device)
    _synchronize(device)
    return Run(sum(outputs), time.perf_counter() - start, time.process_time() - cpu)


@torch.inference_mode()
def run_hf_padded(model, prompts: list[list[int]], outputs: list[int], device: torch.device) -> Run:
    """All prompts as one left-padded batch, run for the longest output; counts the tokens asked for."""
    _hf_generate(model, [[1, 2, 3]] * len(prompts), 2, device)  # warm-up at this batch size
    _synchronize(device)
    start, cpu = time.perf_counter(), time.process_time()
    _hf_generate(model, prompts, max(outputs), device)
    _synchronize(device)
    return Run(sum(outputs), time.perf_counter() - start, time.process_time() - cpu)


def _hf_generate(model, prompts: list[list[int]], max_new_tokens: int, device: torch.device) -> torch.Tensor:
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=max_new_tokens,
        min_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=0,
        eos_token_id=None,
    )
    # No early stop: every row got exactly max_new_tokens new tokens, as our engine does.
    assert out.shape == (len(prompts), width + max_new_tokens), (tuple(out.shape), width, max_new_tokens)
    return out


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a clock read after it counts it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pct(values: list[float] | None, q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


if __name__ == "__main__":
    sys.exit(main())
