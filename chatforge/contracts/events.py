"""Trainer progress events: what a run reports while it trains, and what every reader parses.

Producers: `trainer.telemetry.Telemetry.emit` (every stage, rank 0), the gateway's own `state`
events (routes/jobs.py), and the tests' stand-in stages. Readers: the report card, the gateway's
checkpoint curves and the tests read a stage's `log.jsonl` (`read_log`), the gateway relays a job's
Redis stream over SSE, and the web UI folds them into a progress bar (web/js/job_progress.js reads `num_steps`,
`step`, `loss`, `lr`, `tokens_per_s`, `mfu`, `eta_s`, `val_bpb`, `state`).

Every event is one JSON object: `type` (which event), `version` (of this contract when written),
the envelope (`stage`, `run`, `time`, and `line`, its human form printed on the console), then its
own fields. In Redis each event is one entry of the stream `chatforge:job:<job id>:events` with two
fields, `type` and `data` (the JSON object), written by `stream_entry`.

Readers call `parse_event`: an event of a known type and version becomes its model; anything else
(a newer version, a type added later, a line that does not validate) is kept as written in a
`RawEvent`, never an error, so an old reader follows a newer trainer. A change to a model's fields
is a new `EVENTS_VERSION`.

Torch-free and pydantic-only: the gateway image imports this, and it has no trainer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

log = logging.getLogger(__name__)

EVENTS_VERSION = 1
EVENTS_MAXLEN = 10_000  # per job stream; older entries are trimmed (approximately) past this
LOG_FILE = "log.jsonl"  # in each stage directory: that stage's events, one JSON object a line


def job_events_stream(job_id: str) -> str:
    """The Redis stream of a job's events."""
    return f"chatforge:job:{job_id}:events"


class VersionedEvent(BaseModel):
    """What every event has: its type and the contract version it was written with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    version: int = EVENTS_VERSION


class TrainerEvent(VersionedEvent):
    """The envelope every trainer event has; `Telemetry.emit` fills `stage`, `run` and `time`."""

    stage: str = ""  # tokenizer, base, mid, sft, rl (the eval event: the measured checkpoint's stage)
    run: str = ""
    time: float = 0.0  # unix seconds when it was written
    line: str = ""  # the human form, printed on the console and by the driver that follows the log


class StartEvent(TrainerEvent):
    """A stage (re)starts: where it stands and how far it goes."""

    type: Literal["start"] = "start"
    step: int
    num_steps: int
    workers: int
    resumed: bool
    init: str = ""  # base/mid/sft: the checkpoint the weights came from ("random" for a new base)


class ProgressEvent(TrainerEvent):
    """One logged step (every `log_every_steps`)."""

    type: Literal["progress"] = "progress"
    step: int
    loss: float  # nats per target token (RL: the policy loss)
    lr: float  # Muon's learning rate now (RL: the multiplier of the SFT rates)
    tokens_per_s: float  # all ranks
    mfu: float  # model FLOPs utilisation, 0-1 (RL: 0, not measured)
    eta_s: float


class ValidationEvent(TrainerEvent):
    type: Literal["validation"] = "validation"
    step: int
    val_bpb: float  # bits per byte on the validation split


class Sample(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str
    completion: str


class SamplesEvent(TrainerEvent):
    """A few greedy completions, to see what the model says."""

    type: Literal["samples"] = "samples"
    step: int
    samples: list[Sample]


class CheckpointEvent(TrainerEvent):
    type: Literal["checkpoint"] = "checkpoint"
    step: int
    path: str  # the checkpoint directory in the artifact store


class DoneEvent(TrainerEvent):
    type: Literal["done"] = "done"
    step: int
    metrics: dict[str, int | float]  # the final metrics (train_loss, val_bpb, ...; RL: mean_reward, ...)


class CoreSummary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    score: float  # CORE, the centered mean over tasks
    tasks: dict[str, dict[str, Any]]  # by task label: its result (trainer/eval/core.py)


class ChatSummary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    chatcore: float
    tasks: dict[str, dict[str, Any]]  # by task name: its result (trainer/eval/chat_eval.py)


class EvalEvent(TrainerEvent):
    """A checkpoint measured (trainer/eval/stage.py); the full results, samples included, are in
    `step_N.eval.json` beside the checkpoint."""

    type: Literal["eval"] = "eval"
    checkpoint: str  # run/stage/step_N
    step: int
    params: int
    bpb: float | None = None  # bits per byte on the corpus's validation shards, when measured
    core: CoreSummary | None = None
    chat: ChatSummary | None = None
    duration_s: float


class RLStepEvent(TrainerEvent):
    type: Literal["rl"] = "rl"
    step: int
    mean_reward: float  # over every sampled completion of the step, all ranks
    loss: float
    sampled_tokens: float


class RLEvalEvent(TrainerEvent):
    type: Literal["rl_eval"] = "rl_eval"
    step: int
    pass_at_k: float  # on the held-out questions
    eval_reward: float
    pass_k: int


class JobStateEvent(VersionedEvent):
    """The gateway's own event on a job's SSE stream: the job's state changed (queued, running,
    succeeded, failed, cancelled)."""

    type: Literal["state"] = "state"
    state: str
    message: str = ""


Event = Annotated[
    StartEvent | ProgressEvent | ValidationEvent | SamplesEvent | CheckpointEvent | DoneEvent | EvalEvent
    | RLStepEvent | RLEvalEvent | JobStateEvent,
    Field(discriminator="type"),
]  # fmt: skip
_EVENT: TypeAdapter[Event] = TypeAdapter(Event)
EVENT_TYPES: frozenset[str] = frozenset(m.model_fields["type"].default for m in get_args(get_args(Event)[0]))


@dataclass(frozen=True)
class RawEvent:
    """An event this reader does not know (a newer version or type) or that did not validate: kept
    exactly as written, so it is passed on and shown rather than lost."""

    data: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.data.get("type", "event"))

    @property
    def time(self) -> float | None:
        value = self.data.get("time")
        return float(value) if isinstance(value, int | float) else None


def parse_event(data: Mapping[str, Any]) -> Event | RawEvent:
    """The typed event of one JSON object, or a RawEvent (see the module's docstring)."""
    kind, version = data.get("type"), data.get("version", EVENTS_VERSION)  # unversioned: from before, 1
    if (
        not isinstance(kind, str)
        or kind not in EVENT_TYPES
        or not isinstance(version, int)
        or version > EVENTS_VERSION
    ):
        return RawEvent(dict(data))
    try:
        return _EVENT.validate_python(data)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        log.warning("a %r event does not match its contract (%s at %s); kept raw", data.get("type"),
                    first["msg"], ".".join(map(str, first["loc"])))  # fmt: skip
        return RawEvent(dict(data))


def event_dict(event: VersionedEvent | RawEvent) -> dict[str, Any]:
    """An event as its JSON object (what was written, for a RawEvent)."""
    return dict(event.data) if isinstance(event, RawEvent) else event.model_dump(mode="json")


def stream_entry(event: VersionedEvent) -> dict[str, str]:
    """The Redis stream entry of an event (`XADD chatforge:job:<id>:events * type T data JSON`)."""
    return {"type": event.type, "data": event.model_dump_json()}


def parse_stream_entry(fields: Mapping[str, str]) -> Event | RawEvent:
    """The event of one Redis stream entry; its `type` field fills in a `data` without one."""
    try:
        data = json.loads(fields.get("data", "{}"))
    except json.JSONDecodeError:
        data = {"raw": fields.get("data")}
    if not isinstance(data, dict):
        data = {"raw": data}
    return parse_event({"type": fields.get("type", "event"), **data})


def read_log(path: str | Path, kind: str | None = None) -> list[Event | RawEvent]:
    """The events of a stage's log.jsonl (optionally of one type), in the order they were written,
    each parsed through its contract (`parse_event`)."""
    path = Path(path)
    if not path.is_file():
        return []
    events = [parse_log_line(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [e for e in events if e is not None and (kind is None or e.type == kind)]


def parse_log_line(line: str) -> Event | RawEvent | None:
    """One log.jsonl line's event; None for a blank or torn line (a crash mid-write)."""
    if not line.strip():
        return None
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        log.warning("skipping a log line that is not JSON: %.80r", line)
        return None
    return parse_event(data) if isinstance(data, dict) else RawEvent({"raw": data})
