"""A small training stage for the KubeRay rehearsal: real optimizer steps on a tiny GPT, a real
checkpoint, the trainer's events.

Run as `<python> rehearsal_stage.py <stage> --run R --job-id ID [<the stage's flags>]`: it takes
exactly the flags `chatforge train <stage>` takes (the contract's model, `chatforge.contracts.jobs`),
trains a 2-layer GPT with AdamW for `--num-steps` steps on the token ids of a fixed text from the
artifact store's `default` tokenizer, emits start / progress / checkpoint / done through the
contract's models to the job's Redis stream and `log.jsonl`, and saves the checkpoint at
`runs/<run>/<stage>/step_N` with the checkpoint module, as the real stage does. `chatforge train`
itself needs a corpus and minutes of CPU; this keeps the rehearsal to seconds.
"""

from __future__ import annotations

import argparse
import time

import torch

from chatforge import checkpoint
from chatforge.artifacts import ArtifactStore
from chatforge.contracts.events import (
    EVENTS_MAXLEN,
    CheckpointEvent,
    DoneEvent,
    ProgressEvent,
    StartEvent,
    TrainerEvent,
    job_events_stream,
    stream_entry,
)
from chatforge.contracts.jobs import FLAGS, add_flags
from chatforge.model import GPT, GPTConfig
from chatforge.redisconn import connect
from chatforge.tokenizer import Tokenizer

TEXT = "The rehearsal trains a tiny model so that the whole cluster story runs. " * 8


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("stage")
    parser.add_argument("--run", required=True)
    parser.add_argument("--job-id", required=True)
    known, _ = parser.parse_known_args()
    add_flags(parser, FLAGS[known.stage])
    args = parser.parse_args()
    num_steps = getattr(args, "num_steps", None) or 3
    store = ArtifactStore.from_env(None)
    tokenizer = Tokenizer.load(store.find_tokenizer("default"))
    stage_dir = store.stage_dir(args.run, args.stage)
    stage_dir.mkdir(parents=True, exist_ok=True)
    redis = connect()

    def emit(event: TrainerEvent) -> None:
        event = event.model_copy(update={"stage": args.stage, "run": args.run, "time": time.time()})
        redis.xadd(
            job_events_stream(args.job_id), stream_entry(event), maxlen=EVENTS_MAXLEN, approximate=True
        )
        with open(stage_dir / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(event.model_dump_json() + "\n")

    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=tokenizer.vocab_size, n_layer=2, n_embd=64, n_head=4, n_kv_head=2, sequence_len=256
    )
    model = GPT(config)
    ids = torch.tensor(tokenizer.encode(TEXT)[:129]).unsqueeze(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    emit(StartEvent(step=0, num_steps=num_steps, workers=1, resumed=False))
    loss_value = float("nan")
    for step in range(1, num_steps + 1):
        started = time.perf_counter()
        loss = model(ids[:, :-1], ids[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_value = float(loss)
        rate = (ids.size(1) - 1) / max(time.perf_counter() - started, 1e-9)
        emit(ProgressEvent(step=step, loss=loss_value, lr=3e-3, tokens_per_s=rate, mfu=0.0, eta_s=0.0))
        print(f"step {step}/{num_steps} loss {loss_value:.3f}", flush=True)
    path = checkpoint.save(
        stage_dir, num_steps, model.state_dict(), config=config.to_dict(), metrics={"train_loss": loss_value},
        extra={"tokenizer": "default", "stage": args.stage, "run": args.run},
    )  # fmt: skip
    emit(CheckpointEvent(step=num_steps, path=str(path)))
    emit(DoneEvent(step=num_steps, metrics={"train_loss": loss_value}))


if __name__ == "__main__":
    main()
