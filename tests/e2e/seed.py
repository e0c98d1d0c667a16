"""The artifacts the end-to-end suite serves: a tokenizer and a small model that always behaves.

A trained tiny model does not call the python tool on cue, so the suite serves a real checkpoint
(the GPT of `chatforge.model`, in the checkpoint format, loaded by the inference service like any
other) that was fitted here, in seconds, to two conversations until it reproduces them greedily:

- "What is 6 times 7? Use python." -> `<|python_start|>print(6*7)<|python_end|>`, then, after the
  tool's output (which the engine forces in: `<|output_start|>42\\n<|output_end|>`), "The answer
  is 42." — so the tool loop runs for real: the engine sees the call, the sandbox service runs the
  code, the output goes back into the sequence and the model continues from it;
- "Say hello." -> "Hello from chatforge!"

Written as tokenizer `e2e` and checkpoint `e2e/sft` (`write(root)`); a stack that the suite is
pointed at must serve these (`python -m tests.e2e.seed <artifact root>`, see tests/e2e/README.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

TOKENIZER = "e2e"
CHECKPOINT = "e2e/sft"
TOOL_PROMPT = "What is 6 times 7? Use python."
TOOL_CODE = "print(6*7)"
TOOL_OUTPUT = "42\n"
TOOL_ANSWER = "The answer is 42."
HELLO_PROMPT = "Say hello."
HELLO_ANSWER = "Hello from chatforge!"
FIT_STEPS = 300  # the loss is ~0 by 200 steps; greedy decoding then reproduces both replies


def conversations() -> list[dict[str, object]]:
    return [
        {
            "messages": [
                {"role": "user", "content": TOOL_PROMPT},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "python", "text": TOOL_CODE},
                        {"type": "python_output", "text": TOOL_OUTPUT},
                        {"type": "text", "text": TOOL_ANSWER},
                    ],
                },
            ]
        },
        {
            "messages": [
                {"role": "user", "content": HELLO_PROMPT},
                {"role": "assistant", "content": HELLO_ANSWER},
            ]
        },
    ]


def write(root: Path) -> Path:
    """Write the tokenizer and the fitted checkpoint under artifact root `root`; returns the checkpoint."""
    import torch

    from chatforge import checkpoint
    from chatforge.artifacts import ArtifactStore
    from chatforge.chat import render_conversation
    from chatforge.model import GPT, GPTConfig
    from chatforge.tokenizer import Tokenizer
    from tests.conftest import sample_texts

    store = ArtifactStore.from_env(root)
    texts = sample_texts() + [TOOL_PROMPT, TOOL_CODE, TOOL_ANSWER, HELLO_PROMPT, HELLO_ANSWER] * 20
    tokenizer = Tokenizer.train(texts, vocab_size=512, name=TOKENIZER)
    tokenizer.save(store.tokenizer_path(TOKENIZER))

    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=tokenizer.vocab_size, n_layer=2, n_embd=64, n_head=4, n_kv_head=2, sequence_len=256
    )
    model = GPT(config)
    rows = [render_conversation(tokenizer, c) for c in conversations()]
    length = max(len(r.ids) for r in rows)
    inputs = torch.zeros(len(rows), length - 1, dtype=torch.long)
    targets = torch.full((len(rows), length - 1), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        ids = torch.tensor(r.ids)
        inputs[i, : len(ids) - 1] = ids[:-1]
        # every token after the prompt is learned, the forced tool output too (harmless: the
        # engine forces those tokens anyway, and learning them keeps the continuation exact)
        start = r.ids.index(tokenizer.special_id("<|assistant_start|>"))
        target = ids[1:].clone()
        target[:start] = -1
        targets[i, : len(ids) - 1] = target
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only wait for each other on a busy machine
    try:
        for _ in range(FIT_STEPS):
            loss = model(inputs, targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    extra = {"tokenizer": TOKENIZER, "stage": "sft", "run": "e2e"}
    metrics = {"train_loss": float(loss.detach())}
    checkpoint.save(
        store.stage_dir("e2e", "sft"),
        1,
        model.state_dict(),
        config=config.to_dict(),
        metrics=metrics,
        extra=extra,
    )
    return store.resolve_checkpoint(CHECKPOINT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.seed", description=__doc__.splitlines()[0])
    parser.add_argument("root", help="artifact store root (CHATFORGE_ARTIFACTS of the stack)")
    args = parser.parse_args(argv)
    path = write(Path(args.root))
    print(f"wrote tokenizer {TOKENIZER!r} and checkpoint {CHECKPOINT} ({path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
