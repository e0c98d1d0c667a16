"""Trainer progress events (chatforge.contracts.events): typed and versioned on the way out, parsed on
the way in, and whatever a reader does not know is kept as written rather than lost or fatal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from chatforge.contracts.events import (
    EVENT_TYPES,
    EVENTS_VERSION,
    DoneEvent,
    EvalEvent,
    JobStateEvent,
    ProgressEvent,
    RawEvent,
    StartEvent,
    ValidationEvent,
    event_dict,
    parse_event,
    parse_stream_entry,
    read_log,
    stream_entry,
)

EMIT_STAGE = str(Path(__file__).parents[1] / "gateway" / "emit_stage.py")


def test_every_event_round_trips_through_its_stream_entry():
    events = [
        StartEvent(
            stage="base", run="r", time=1.0, step=0, num_steps=10, workers=2, resumed=False, init="random"
        ),
        ProgressEvent(
            step=1, loss=3.0, lr=0.02, tokens_per_s=100.0, mfu=0.1, eta_s=9.0, line="[r/base] step 1"
        ),
        DoneEvent(step=10, metrics={"train_loss": 2.0, "step": 10}),
        EvalEvent(
            checkpoint="r/sft/step_000010",
            step=10,
            params=1000,
            bpb=1.5,
            duration_s=2.0,
            chat={"chatcore": 0.1, "tasks": {"spelling": {"accuracy": 0.5}}},
        ),  # fmt: skip
        JobStateEvent(state="running"),
    ]
    for event in events:
        entry = stream_entry(event)
        assert entry["type"] == event.type and json.loads(entry["data"])["version"] == EVENTS_VERSION
        assert parse_stream_entry(entry) == event
        assert parse_event(event_dict(event)) == event
    assert EVENT_TYPES >= {"start", "progress", "validation", "samples", "checkpoint", "done", "eval", "rl",
                           "rl_eval", "state"}  # fmt: skip


def test_a_producer_cannot_drift_from_the_contract():
    # the gateway's old stand-in sent `total_steps` where the trainer sends `num_steps`
    with pytest.raises(ValidationError, match="total_steps"):
        StartEvent(step=0, total_steps=5, workers=1, resumed=False)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="loss"):
        ProgressEvent(step=1)  # type: ignore[call-arg]


def test_what_a_reader_does_not_know_is_kept_raw():
    assert parse_event({"type": "progress", "version": EVENTS_VERSION + 1, "step": 1, "new": 2}) == RawEvent(
        {"type": "progress", "version": EVENTS_VERSION + 1, "step": 1, "new": 2}
    )
    assert parse_event({"type": "compaction", "step": 3}).type == "compaction"  # a type added later
    drifted = parse_event({"type": "start", "total_steps": 5})
    assert isinstance(drifted, RawEvent) and event_dict(drifted) == {"type": "start", "total_steps": 5}
    # an event written before versions existed is version 1
    old = parse_event({"type": "validation", "step": 2, "val_bpb": 1.5})
    assert isinstance(old, ValidationEvent) and old.version == 1
    assert parse_stream_entry({"type": "progress", "data": "not json"}).type == "progress"
    assert isinstance(parse_event({"type": ["progress"]}), RawEvent)
    assert parse_stream_entry({"type": "x", "data": "[1]"}) == RawEvent({"type": "x", "raw": [1]})


def test_a_stage_log_reads_back_in_order_skipping_torn_lines(tmp_path):
    """log.jsonl as a crash can leave it: a blank line and a half-written last line are skipped."""
    log = tmp_path / "log.jsonl"
    written = [
        StartEvent(step=0, num_steps=2, workers=1, resumed=False),
        ValidationEvent(step=2, val_bpb=1.5),
    ]
    log.write_text("\n".join(e.model_dump_json() for e in written) + '\n\n{"type": "progr', encoding="utf-8")
    assert read_log(log) == written
    assert read_log(log, "validation") == written[1:]
    assert read_log(tmp_path / "absent.jsonl") == []


def test_the_gateway_image_can_read_events_without_the_trainer():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import chatforge.contracts.events, chatforge.contracts.jobs\n"
        "assert 'trainer' not in sys.modules and 'ray' not in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_tests_stand_in_stages_write_the_contracts_events(tmp_path, monkeypatch):
    """The gateway's and the web UI's stand-in stages emit through the same models as the trainer."""
    from chatforge import redisconn
    from chatforge.contracts.events import job_events_stream

    monkeypatch.delenv("REDIS_URL", raising=False)
    redis = redisconn.connect(embedded_dir=tmp_path / "redis")
    try:
        stand_in = [EMIT_STAGE, "--step-s", "0", "base", "--run", "r", "--job-id", "job-s", "--num-steps", "3",
                    "--depth", "2"]  # fmt: skip
        # it inherits REDIS_URL, which connect() exported for the embedded server
        result = subprocess.run([sys.executable, *stand_in], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        events = [parse_stream_entry(fields) for _, fields in redis.xrange(job_events_stream("job-s"))]
        assert [e.type for e in events] == ["start", "progress", "progress", "progress", "done"]
        assert not [e for e in events if isinstance(e, RawEvent)]
        assert isinstance(events[0], StartEvent) and events[0].num_steps == 3 and events[0].stage == "base"
    finally:
        redisconn.stop_embedded()
