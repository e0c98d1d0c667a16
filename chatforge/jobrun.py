"""`python -m chatforge.jobrun --job-id ID -- <command ...>`: a job whose processes live and die together.

The gateway's local job backend runs every job through this wrapper (docs/architecture.md,
"Nothing orphaned"). Ray's job supervisor starts the entrypoint in a session of its own and kills
that shell when the supervisor's worker exits, but not the shell's children: a supervisor that dies
with its Ray (a gateway killed with SIGKILL) left `chatforge train` running under init. The wrapper:

- makes the job a session of its own and records it (`ProcessRef` of the leader) in Redis under
  `chatforge.contracts.jobs.job_process_key`, so a later gateway can end what is left of it;
- asks for SIGTERM when its parent dies (`PR_SET_PDEATHSIG`), and on SIGTERM, SIGINT or SIGHUP
  (Ray's stop, the parent's death) stops the whole session: SIGTERM, then SIGKILL after `--grace-s`;
- when the command exits, stops what it left in the session (a local Ray the job started, its
  agents, stray children) and exits with the command's status.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from types import FrameType

from chatforge.lifetime import ProcessRef, kill_session, set_parent_death_signal

STRAGGLER_GRACE_S = 5.0  # what the command left behind gets this long to exit after SIGTERM


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chatforge.jobrun", description=__doc__.split("\n")[0])
    parser.add_argument("--job-id", default="", help="record the job's session under this job id in Redis")
    parser.add_argument("--grace-s", type=float, default=10.0, help="SIGTERM to SIGKILL when stopped")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the job's command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (after --)")

    if os.getsid(0) != os.getpid():
        os.setsid()  # the job's own session: one kill_session reaches every process of it
    stopping: list[int] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    if not set_parent_death_signal(signal.SIGTERM):
        return 128 + signal.SIGTERM  # the parent died before we could tie ourselves to it
    if args.job_id:
        _record(args.job_id)

    child = subprocess.Popen(command)
    sid = os.getpid()
    while child.poll() is None and not stopping:
        try:
            child.wait(0.2)
        except subprocess.TimeoutExpired:
            pass
    if stopping:
        print(f"jobrun: signal {stopping[0]}: stopping the job's processes", file=sys.stderr, flush=True)
        kill_session(sid, grace_s=args.grace_s, spare=sid)
        child.wait()
        return 128 + stopping[0]
    kill_session(sid, grace_s=STRAGGLER_GRACE_S, spare=sid)
    return child.returncode if child.returncode >= 0 else 128 - child.returncode


def _record(job_id: str) -> None:
    """Write where the job runs to Redis (best effort: a job without Redis still runs)."""
    url = os.environ.get("REDIS_URL")
    if not url:
        return
    try:
        import redis

        from chatforge.contracts.jobs import job_process_key

        client = redis.Redis.from_url(url, socket_timeout=5)
        client.set(job_process_key(job_id), json.dumps(ProcessRef.current().to_dict()), ex=7 * 24 * 3600)
        client.close()
    except Exception as e:  # noqa: BLE001 - reported, and the job goes on
        print(f"jobrun: could not record the job's session in Redis: {e!r}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
