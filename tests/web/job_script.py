"""What the test gateway's jobs run instead of `chatforge train`: a process that reports progress
the way the trainer does (events XADD'ed to the job's Redis stream), then waits to be cancelled.

Usage (the gateway appends the stage and flags): job_script.py <stage> --run R --job-id ID [...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from chatforge.events import EVENTS_MAXLEN, job_events_stream
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

    def emit(kind: str, **fields: object) -> None:
        record = {"type": kind, "stage": args.stage, "run": args.run, "time": time.time(), **fields}
        redis.xadd(
            job_events_stream(args.job_id), {"type": kind, "data": json.dumps(record)}, maxlen=EVENTS_MAXLEN
        )

    emit("start", step=0, num_steps=NUM_STEPS, workers=1, resumed=False)
    for step in range(1, STEPS_DONE + 1):
        loss = 4.0 - 0.25 * step
        emit("progress", step=step, loss=loss, lr=0.02, tokens_per_s=1500.0, mfu=0.01, eta_s=60.0)
        print(f"[{args.run}/{args.stage}] step {step}/{NUM_STEPS} | loss {loss:.4f}", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
