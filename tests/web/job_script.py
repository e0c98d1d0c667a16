"""What the test gateway's jobs run instead of `chatforge train`: a process that reports progress
the way the trainer does (the trainer's event models, chatforge.contracts.events, XADD'ed to the
job's Redis stream), then waits to be cancelled.

A stage job reports 3 of 10 steps. A pipeline job logs 40 lines, reports base whole (3 steps, a
validation, done) and then sft part-way (2 of 4 steps, a validation), and keeps printing a log line
a second, so a page that follows the logs has new lines to follow.

Usage (the gateway appends the stage and flags): job_script.py <stage> --run R --job-id ID [...]
"""

from __future__ import annotations

import argparse
import sys
import time

from chatforge.contracts.events import (
    EVENTS_MAXLEN,
    DoneEvent,
    ProgressEvent,
    StartEvent,
    TrainerEvent,
    ValidationEvent,
    job_events_stream,
    stream_entry,
)
from chatforge.redisconn import connect

NUM_STEPS = 10
STEPS_DONE = 3  # then it waits: the test sees a job part-way through and cancels it
# The pipeline's stages: (name, steps, steps done before it waits or moves on, bits per byte at the end)
PIPELINE = (("base", 3, 3, 2.5), ("sft", 4, 2, 1.5))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("stage")
    parser.add_argument("--run", required=True)
    parser.add_argument("--job-id", required=True)
    args, _ = parser.parse_known_args(argv)
    redis = connect()

    def emit(stage: str, event: TrainerEvent) -> None:
        event = event.model_copy(update={"stage": stage, "run": args.run, "time": time.time()})
        redis.xadd(job_events_stream(args.job_id), stream_entry(event), maxlen=EVENTS_MAXLEN)

    def train(stage: str, num_steps: int, steps: int) -> None:
        emit(stage, StartEvent(step=0, num_steps=num_steps, workers=1, resumed=False))
        for step in range(1, steps + 1):
            loss = 4.0 - 0.25 * step
            emit(
                stage, ProgressEvent(step=step, loss=loss, lr=0.02, tokens_per_s=1500.0, mfu=0.01, eta_s=60.0)
            )
            print(f"[{args.run}/{stage}] step {step}/{num_steps} | loss {loss:.4f}", flush=True)

    if args.stage != "pipeline":
        train(args.stage, NUM_STEPS, STEPS_DONE)
        while True:
            time.sleep(1)

    for shard in range(1, 41):  # more lines than the logs panel shows: it has something to scroll
        print(f"[{args.run}] reading shard {shard} of 40", flush=True)
    for stage, num_steps, steps, bpb in PIPELINE:
        train(stage, num_steps, steps)
        emit(stage, ValidationEvent(step=steps, val_bpb=bpb))
        if steps == num_steps:
            emit(stage, DoneEvent(step=steps, metrics={"val_bpb": bpb}))
    tick = 0
    while True:
        tick += 1
        print(f"[{args.run}/sft] waiting, tick {tick}", flush=True)
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
