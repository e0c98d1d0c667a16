"""A stand-in training stage for the jobs tests: the command line and the events of a real one.

Run as `<python> emit_stage.py [--step-s S] <stage> --run R --job-id ID [<the stage's flags>]`: it
accepts exactly the flags `chatforge train base` does (built from the same contract,
`chatforge.contracts.jobs.TrainFlags`), writes the trainer's events (start, progress per step, done)
through the same models (`chatforge.contracts.events`) to the job's Redis stream, and prints a line
per step for the job's logs. The gateway runs it through the real backend (Ray Jobs API) instead of
`chatforge train`, which needs a corpus; `--step-s`, the stand-in's own option, goes in the job
command before the stage.
"""

from __future__ import annotations

import argparse
import time

from chatforge.contracts.events import (
    EVENTS_MAXLEN,
    DoneEvent,
    ProgressEvent,
    StartEvent,
    TrainerEvent,
    job_events_stream,
    stream_entry,
)
from chatforge.contracts.jobs import TrainFlags, add_flags
from chatforge.redisconn import connect


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--step-s", type=float, default=0.1)
    parser.add_argument("stage")
    parser.add_argument("--run", required=True)
    parser.add_argument("--job-id", required=True)
    add_flags(parser, TrainFlags)
    args = parser.parse_args()
    num_steps = TrainFlags.from_args(args).num_steps or 5
    redis = connect()

    def emit(event: TrainerEvent) -> None:
        event = event.model_copy(update={"stage": args.stage, "run": args.run, "time": time.time()})
        redis.xadd(
            job_events_stream(args.job_id), stream_entry(event), maxlen=EVENTS_MAXLEN, approximate=True
        )

    emit(StartEvent(step=0, num_steps=num_steps, workers=1, resumed=False))
    for step in range(1, num_steps + 1):
        time.sleep(args.step_s)
        loss = 5.0 / step
        emit(ProgressEvent(step=step, loss=loss, lr=0.02, tokens_per_s=1000.0, mfu=0.0, eta_s=0.0))
        print(f"step {step}/{num_steps} loss {loss:.3f}", flush=True)
    emit(DoneEvent(step=num_steps, metrics={"train_loss": 5.0 / num_steps}))


if __name__ == "__main__":
    main()
