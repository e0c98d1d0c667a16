"""The job event stream's Redis key and bounds, shared by the trainer (writer) and the gateway (reader).

Torch-free on purpose: the gateway image must not import `trainer`, which pulls in PyTorch.
Each entry has two fields: `type` (progress, eval, checkpoint, stage, done, ...) and `data` (the
event as a JSON object).
"""

from __future__ import annotations

EVENTS_MAXLEN = 10_000  # per job stream; older entries are trimmed (approximately) past this


def job_events_stream(job_id: str) -> str:
    return f"chatforge:job:{job_id}:events"
