"""What the test gateway's jobs run instead of `chatforge train`: a process that reports progress
the way the trainer does (the trainer's event models, chatforge.contracts.events, XADD'ed to the
job's Redis stream), then waits to be cancelled.

Usage (the gateway appends the stage and flags): job_script.py <stage> --run R --job-id ID [...]
"""

from __future__ import annotations

import argparse
import sys
import time

from chatforge.contracts.events import (
    EVENTS_MAXLEN,
    ProgressEvent,
    StartEvent,
    TrainerEvent,
    job_events_stream,
    stream_entry,
)
from chatforge.redisconn import connect

NUM_STEPS = 10
STEPS_DONE = 3  # then it waits: the test sees a job part-way through and cancels it


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("stage")
    parser.add_argument("--run", required=True)
    parser.add_argument("--job-id", required=True)
    args, _ = parser.parse_known_args(argv)
    redis = connect()

    def emit(event: TrainerEvent) -> None:
        event = event.model_copy(update={"stage": args.stage, "run": args.run, "time": time.time()})
        redis.xadd(job_events_stream(args.job_id), stream_entry(event), maxlen=EVENTS_MAXLEN)

    emit(StartEvent(step=0, num_steps=NUM_STEPS, workers=1, resumed=False))
    for step in range(1, STEPS_DONE + 1):
        loss = 4.0 - 0.25 * step
        emit(ProgressEvent(step=step, loss=loss, lr=0.02, tokens_per_s=1500.0, mfu=0.01, eta_s=60.0))
        print(f"[{args.run}/{args.stage}] step {step}/{NUM_STEPS} | loss {loss:.4f}", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
