"""A stand-in training stage for the jobs tests: the command line and the events of a real one.

Run as `<python> emit_stage.py <stage> --run R --job-id ID [--num-steps N] [--step-s S]`, it writes
the trainer's event shapes (stage, progress per step, done) to the job's Redis stream, the same key
the trainer uses (`chatforge.events`), and prints a line per step for the job's logs. The gateway
runs it through the real backend (Ray Jobs API) instead of `chatforge train`, which needs a corpus.
"""

from __future__ import annotations

import argparse
import json
import time

from chatforge.events import EVENTS_MAXLEN, job_events_stream
from chatforge.redisconn import connect


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("stage")
    parser.add_argument("--run", required=True)
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--num-steps", type=int, default=5)
    parser.add_argument("--step-s", type=float, default=0.1)
    args = parser.parse_args()
    redis = connect()
    stream = job_events_stream(args.job_id)

    def emit(kind: str, **fields: object) -> None:
        record = {"type": kind, "stage": args.stage, "run": args.run, "time": time.time(), **fields}
        redis.xadd(stream, {"type": kind, "data": json.dumps(record)}, maxlen=EVENTS_MAXLEN, approximate=True)

    emit("start", total_steps=args.num_steps)
    for step in range(1, args.num_steps + 1):
        time.sleep(args.step_s)
        loss = 5.0 / step
        emit("progress", step=step, loss=loss)
        print(f"step {step}/{args.num_steps} loss {loss:.3f}", flush=True)
    emit("done", step=args.num_steps)


if __name__ == "__main__":
    main()
