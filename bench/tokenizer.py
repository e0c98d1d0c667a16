"""Tokenizer benchmark: our BPE against tiktoken built from the same merges, on the same text.

Trains a tokenizer on the bundled corpus (training time per MB of text), builds a tiktoken
`Encoding` from its vocabulary and split pattern, checks both give identical ids, then times
batch encoding of the validation shard with each. The headline is our batch-encode throughput and
its ratio to tiktoken's `encode_ordinary_batch` (both use all cores).

    python bench/tokenizer.py [--quick] [--corpus data/corpus] [--vocab 8192]
"""

from __future__ import annotations

import argparse
import sys
import time

from chatforge.corpus import iter_texts, train_shards, val_shards
from chatforge.tokenizer import SPECIAL_TOKENS, SPLIT_PATTERN, Tokenizer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller training text and fewer repeats")
    parser.add_argument("--corpus", default="data/corpus", help="corpus directory (built by `make data`)")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    try:
        import tiktoken
    except ImportError:
        print("tiktoken is not installed: pip install -e '.[dev]'", file=sys.stderr)
        return 2
    train, val = train_shards(args.corpus), val_shards(args.corpus)
    if not train or not val:
        print(f"no corpus in {args.corpus}: run `make data` first", file=sys.stderr)
        return 2

    train_chars = 4_000_000 if args.quick else 40_000_000
    repeats = args.repeats or (3 if args.quick else 7)
    texts = list(iter_texts(train))
    t0 = time.perf_counter()
    tok = Tokenizer.train(texts, vocab_size=args.vocab, max_chars=train_chars, name="bench")
    train_s = time.perf_counter() - t0
    train_mb = min(train_chars, sum(len(t[:10_000]) for t in texts)) / 1e6
    print(
        f"trained vocab {tok.vocab_size} on {train_mb:.1f} M chars in {train_s:.1f} s ({train_s / train_mb:.2f} s/MB)"
    )

    n_base = tok.vocab_size - len(SPECIAL_TOKENS)
    enc = tiktoken.Encoding(
        name="chatforge-bench",
        pat_str=SPLIT_PATTERN,
        mergeable_ranks=tok.mergeable_ranks(),
        special_tokens={s: n_base + i for i, s in enumerate(SPECIAL_TOKENS)},
    )
    docs = list(iter_texts(val))
    if args.quick:
        docs = docs[: max(1, len(docs) // 2)]
    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6

    ours_ids = tok.encode_batch(docs)
    theirs_ids = enc.encode_ordinary_batch(docs)
    mismatched = sum(a != b for a, b in zip(ours_ids, theirs_ids, strict=True))
    n_tokens = sum(len(ids) for ids in ours_ids)
    print(
        f"validation text: {len(docs)} docs, {mb:.2f} MB, {n_tokens} tokens ({mb * 1e6 / n_tokens:.2f} bytes/token)"
    )
    print(f"identical ids: {len(docs) - mismatched}/{len(docs)} documents")

    # Interleaved repeats, best of each: other load on the machine hits both sides alike.
    contenders = {
        "chatforge encode_batch": tok.encode_batch,
        "tiktoken encode_ordinary_batch": enc.encode_ordinary_batch,
        "HF tokenizers encode_batch_fast": lambda d: tok._hf.encode_batch_fast(d, add_special_tokens=False),
    }
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(repeats):
        for name, fn in contenders.items():
            t = time.perf_counter()
            fn(docs)
            best[name] = min(best[name], time.perf_counter() - t)
    for name, seconds in best.items():
        print(f"{name:32s} {mb / seconds:6.1f} MB/s")
    ours = mb / best["chatforge encode_batch"]
    theirs = mb / best["tiktoken encode_ordinary_batch"]
    if mismatched:
        print(f"WARNING: {mismatched} documents tokenized differently", file=sys.stderr)
    print(f"tokenizer_batch_encode: {ours:.1f} MB/s ({ours / theirs:.2f}x vs tiktoken; goal >= 1.0x)")
    return 1 if mismatched else 0


if __name__ == "__main__":
    sys.exit(main())
