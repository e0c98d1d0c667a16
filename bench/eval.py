"""Evaluation throughput: CORE scoring and a generative chat eval, batched against one at a time.

CORE: a 4-way multiple-choice task with 5-shot prompts, scored as the eval stage does (`batch_rows`
rows per forward pass, the options of an example sharing one row and their few-shot prefix) versus
one sequence per pass, the prefix computed again for every option. Chat: a generative task
(spelling, greedy, up to `--max-tokens` new tokens) through the paged inference engine with up to
64 sequences in flight versus one request at a time on the same engine. Same model, same examples, same results (the
benchmark checks that the answers agree). The headline is the examples/s of both evals together
with batching, and its ratio to the one-at-a-time run.

The model is a randomly initialised GPT of `--depth` (its answers are meaningless; its cost is
real), or the checkpoint given with `--checkpoint run/stage` and `--artifacts`.

    python bench/eval.py [--quick] [--depth 4] [--checkpoint run/sft --artifacts artifacts]
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import torch
from inference_svc.driver import EngineDriver

from chatforge.model import GPT, GPTConfig, default_device
from chatforge.tokenizer import Tokenizer
from trainer.eval.chat_eval import evaluate_chat_task, spelling_rows, spelling_task
from trainer.eval.core import CoreTask, evaluate_task
from trainer.tasks.lexicon import WORDS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer examples (well under a minute on 2 cores)"
    )
    parser.add_argument(
        "--depth", type=int, default=None, help="random model depth (default: 2 quick, 4 full)"
    )
    parser.add_argument("--checkpoint", default="", help="run/stage[/step_N] instead of a random model")
    parser.add_argument("--artifacts", default=None)
    parser.add_argument("--core-examples", type=int, default=None)
    parser.add_argument("--chat-examples", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=None)
    args = parser.parse_args()
    n_core = args.core_examples or (32 if args.quick else 200)
    n_chat = args.chat_examples or (32 if args.quick else 128)
    max_tokens = args.max_tokens or (16 if args.quick else 48)
    args.depth = args.depth or (2 if args.quick else 4)
    if args.quick:
        # One thread: on a shared 2-core machine, two torch threads fighting other jobs for the
        # cores run many times slower and the ratio becomes noise.
        torch.set_num_threads(1)

    model, tokenizer = _model(args)
    print(f"model: {model.num_params():,} params on {next(model.parameters()).device}; "
          f"{n_core} CORE examples, {n_chat} chat examples x up to {max_tokens} tokens")  # fmt: skip
    core = _core_task(n_core)
    chat = spelling_task(spelling_rows(n_chat), max_tokens=max_tokens)

    for share_prefix in (True, False):  # warm up both paths (first-call allocations, kernels)
        evaluate_task(model, tokenizer, _core_task(4), batch_rows=4, share_prefix=share_prefix)
    timings = {}
    answers = {}
    for mode, batch_rows, share_prefix, in_flight in (
        ("batched", 32, True, 64),
        ("one at a time", 1, False, 1),
    ):
        t = time.perf_counter()
        core_result = evaluate_task(model, tokenizer, core, batch_rows=batch_rows, share_prefix=share_prefix)
        core_s = time.perf_counter() - t
        generator = EngineDriver.for_model(model, tokenizer, max_in_flight=in_flight)
        t = time.perf_counter()
        chat_result = evaluate_chat_task(model, tokenizer, chat, generator=generator, keep_samples=n_chat)
        chat_s = time.perf_counter() - t
        generator.close()
        timings[mode] = (core_s, chat_s)
        answers[mode] = (core_result.correct, [s["reply"] for s in chat_result.samples])
        print(f"{mode:14s} CORE {n_core / core_s:8.1f} examples/s | chat {n_chat / chat_s:7.2f} examples/s")
    if answers["batched"] != answers["one at a time"]:
        print("WARNING: batched and one-at-a-time answers differ", file=sys.stderr)
    batched = (n_core + n_chat) / sum(timings["batched"])
    single = (n_core + n_chat) / sum(timings["one at a time"])
    core_ratio = timings["one at a time"][0] / timings["batched"][0]
    chat_ratio = timings["one at a time"][1] / timings["batched"][1]
    print(f"CORE {core_ratio:.1f}x, chat {chat_ratio:.1f}x faster batched")
    print(f"eval: {batched:.1f} examples/s ({batched / single:.1f}x vs one at a time; goal >= 3x)")
    return 0 if answers["batched"] == answers["one at a time"] else 1


def _model(args: argparse.Namespace) -> tuple[GPT, Tokenizer]:
    if args.checkpoint:
        from chatforge.artifacts import ArtifactStore
        from chatforge.loading import load_model

        loaded = load_model(args.checkpoint, ArtifactStore.from_env(args.artifacts))
        assert loaded.tokenizer is not None  # load_model insists on one by default
        return loaded.model, loaded.tokenizer
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(40)) + "." for _ in range(300)]
    tokenizer = Tokenizer.train(texts, vocab_size=1024, name="bench")
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(args.depth, tokenizer.vocab_size, sequence_len=512))
    with torch.no_grad():  # a fresh GPT predicts uniformly; random weights make answers vary
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.5 / p.size(1) ** 0.5)
    return model.to(default_device()).eval(), tokenizer


def _core_task(n: int) -> CoreTask:
    rng = random.Random(0)
    words = WORDS[:10]
    items = []
    for _ in range(n):
        query = "Which word comes next: " + " ".join(rng.choice(words) for _ in range(8))
        items.append({"query": query, "choices": rng.sample(words, 4), "gold": rng.randrange(4)})
    return CoreTask("bench_mc", "multiple_choice", items, num_fewshot=5, random_baseline_pct=25.0)


if __name__ == "__main__":
    sys.exit(main())
