"""Job specs: what `POST /v1/jobs` accepts, which is exactly what `chatforge train <stage>` accepts.

A job runs `chatforge train <stage> --run R --job-id ID --<flag> <value> ...`. Each stage's flags are
one pydantic model here (`TrainFlags` for base, mid and sft; `RLFlags`, `EvalStageFlags`, ...), and
both sides of the seam use it, so they cannot drift:

- the trainer's CLI builds its argparse flags from the model (`add_flags`) and validates what it
  parsed through it (`from_args`), then resolves the flags into the stage's typed config
  (`chatforge.contracts.training`) with the model's own `resolve`;
- the gateway validates a job's `config` against the same model and runs the same `resolve`, so a
  bad value (`{"depth": "abc"}`), an unknown flag, or a combination the trainer's config rejects
  (`total_batch_tokens` not a multiple of rows x sequence length) is a 400 naming the field
  (`config.depth`) before anything starts. `JobSpec.argv` writes the command line back, and the
  CLI parses it into the same flags (tests/trainer/test_cli.py checks the round trip).

Flags are strict: "2" is not 2 and 1 is not true. Every flag is optional; an override left out
(None) means the preset's value. `--run`, `--job-id` and `--artifacts` are not flags of a job: the
gateway sets the first two and the job's environment the third (`LAUNCH_FLAGS`).
"""

from __future__ import annotations

import argparse
import re
import types
from dataclasses import replace
from typing import Annotated, Any, Literal, Self, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from chatforge.contracts.strict import StrictModel
from chatforge.contracts.tokens import MIN_VOCAB
from chatforge.contracts.training import (
    TRAIN_STAGES,
    ConfigError,
    Preset,
    PresetName,
    RLConfig,
    TaskSource,
    TokenizerConfig,
    TrainConfig,
    preset,
)

JobStage = Literal["tokenizer", "base", "mid", "sft", "rl", "eval", "report", "pipeline"]
JOB_STAGES: tuple[str, ...] = get_args(JobStage)
RUN_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# A path, a checkpoint or tokenizer name: any text a shell word can carry, within reason.
Text = Annotated[str, Field(max_length=512, pattern=r"^[^\x00\n]*$")]
Label = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]  # an eval task's name
# The python tool: "local" (in-process sandbox), "none", or a sandbox service's URL.
Tools = Annotated[str, Field(max_length=512, pattern=r"^(local|none|https?://[^\s\x00]+)$")]
# A device type's price, `<device>=<dollars per device-hour>`: "H100=2.5", "cpu=0.05".
RATE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}=[0-9]{1,6}(\.[0-9]{1,6})?$"


def _rate(value: str) -> str:
    if not re.fullmatch(RATE_PATTERN, value):
        raise ValueError(
            f"expected <device>=<dollars per device-hour>, such as H100=2.5 or cpu=0.05, got {value!r}"
        )
    return value


# The pattern is published in the schema; the validator says in words what it wants.
Rate = Annotated[str, AfterValidator(_rate), Field(json_schema_extra={"pattern": RATE_PATTERN})]
RATE_HELP = (
    "dollars per device-hour by device type, e.g. H100=2.5 cpu=0.05 (default: H100=3; none for CPUs "
    "or other GPUs, so no cost is shown for them)"
)


def rates_of(words: list[str]) -> dict[str, float]:
    """`--rate` words (checked `Rate`s) as {device type: dollars per device-hour}."""
    return {kind: float(value) for kind, value in (w.rsplit("=", 1) for w in words)}


# The architecture options (docs/model.md), flags of the base stage and of the pipeline.
KvGroup = Annotated[
    int | None, Field(ge=1, description="base: query heads per key/value head (GQA; must divide the heads)")
]
WindowPattern = Annotated[
    str | None,
    Field(
        pattern=r"^[SLsl]{1,64}$",
        description="base: sliding-window pattern tiled over the layers, S short (a quarter of the "
        "context) or L long; the last layer is always L (default: L)",
    ),
]
ValueEmbeds = Annotated[bool | None, Field(description="base: value embeddings on alternate layers")]
ARCHITECTURE_FLAGS: tuple[str, ...] = ("kv_group", "window_pattern", "value_embeds")
# Training and RL: rank 0's own endpoint; on Ray every worker exports through Ray's agent anyway.
MetricsPort = Annotated[
    int | None,
    Field(
        ge=0,
        le=65535,
        description="rank 0's own Prometheus port, on CHATFORGE_TRAIN_METRICS_HOST (default 127.0.0.1; "
        "0: off); Ray runs export every worker's metrics through Ray's agent either way",
    ),
]
# Set by whoever launches a stage, never by a job's config: the gateway gives the run and the job
# id, the job's environment the artifact store.
LAUNCH_FLAGS: tuple[str, ...] = ("run", "job_id", "artifacts")
# Placeholder store root for checking a spec: resolving a config names paths but touches none.
_CHECK_ROOT = "/artifacts"


class Flags(StrictModel):
    """One stage's flags. Field names are the flags (`num_steps` is `--num-steps`); `description`
    is the flag's help. Strict, as JSON Schema reads JSON (2.0 is an integer, "2" is not)."""

    model_config = ConfigDict(frozen=True)

    def check(self, stage: str, run: str) -> None:
        """Raise ConfigError when the trainer would refuse these flags (their cross-field rules)."""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Self:
        """The flags an argparse namespace holds (built by `add_flags`); errors name the flag."""
        given = {
            name: getattr(args, name) for name in cls.model_fields if getattr(args, name, None) is not None
        }
        try:
            return cls.model_validate(given)
        except ValidationError as e:
            problems = [(str(err["loc"][0]) if err["loc"] else "", err["msg"]) for err in e.errors()]
            message = "; ".join(f"{_flag(name)}: {msg}" if name else msg for name, msg in problems)
            raise ConfigError(f"invalid flags: {message}", problems) from None


# --- the stages' flags ----------------------------------------------------------------------------


class TokenizerFlags(Flags):
    preset: PresetName = Field("tiny", description="recipe for the defaults")
    local: bool = Field(
        False, description="accepted like every stage's; the tokenizer trains in this process"
    )
    vocab_size: int | None = Field(None, ge=MIN_VOCAB, description="vocabulary size (default: the preset's)")
    corpus_dir: Text | None = Field(None, description="parquet corpus (default: data/corpus)")
    redo: bool = Field(False, description="retrain even if the tokenizer exists")

    def resolve(self, *, run: str, artifacts_dir: str) -> TokenizerConfig:
        cfg = preset(
            self.preset, run=run, artifacts_dir=artifacts_dir, corpus_dir=self.corpus_dir or "data/corpus"
        )
        return replace(cfg.tokenizer, vocab_size=self.vocab_size) if self.vocab_size else cfg.tokenizer

    def check(self, stage: str, run: str) -> None:
        self.resolve(run=run, artifacts_dir=_CHECK_ROOT)


class TrainFlags(Flags):
    """base, mid and sft: each flag overrides the preset's value of the TrainConfig field it names
    (`gpu` is `use_gpu`)."""

    preset: PresetName = Field("tiny", description="recipe for the defaults")
    local: bool = Field(False, description="train in this process (one worker) instead of on Ray")
    tokenizer: Text | None = Field(None, description="tokenizer artifact name (default: the run's)")
    depth: int | None = Field(None, ge=1, description="transformer blocks; width and heads follow")
    kv_group: KvGroup = None
    window_pattern: WindowPattern = None
    value_embeds: ValueEmbeds = None
    sequence_len: int | None = Field(None, ge=1, description="context length in tokens")
    device_batch_rows: int | None = Field(None, ge=1, description="rows per micro-batch")
    total_batch_tokens: int | None = Field(None, ge=1, description="tokens per optimizer step")
    num_steps: int | None = Field(None, ge=0, description="steps (0: the token budget or one data pass)")
    corpus_dir: Text | None = Field(None, description="parquet corpus (default: data/corpus)")
    task_source: TaskSource | None = Field(None, description="mid/sft rows: offline or hub")
    task_rows: int | None = Field(None, ge=0, description="mid/sft rows per task")
    identity: Text | None = Field(
        None, description="mid/sft: identity file, YAML or JSON (default: trainer/identity.yaml)"
    )
    init_from: Text | None = Field(None, description="checkpoint run/stage to start from")
    seed: int | None = Field(None, ge=0, description="random seed")
    log_every_steps: int | None = Field(None, ge=0, description="progress event every N steps")
    eval_every_steps: int | None = Field(
        None, ge=0, description="validation bpb every N steps (0: at the end)"
    )
    sample_every_steps: int | None = Field(None, ge=0, description="samples every N steps (0: at the end)")
    checkpoint_every_steps: int | None = Field(None, ge=0, description="checkpoint every N steps")
    metrics_port: MetricsPort = None
    workers: int | None = Field(None, ge=1, description="Ray Train workers")
    max_failures: int | None = Field(None, ge=0, description="worker-group restarts before the job fails")
    gpu: bool | None = Field(None, description="one GPU per worker (NCCL)")
    resume: bool | None = Field(None, description="continue from the stage's latest checkpoint")
    peak_flops: float | None = Field(
        None, ge=0, description="MFU's peak FLOP/s per device (default: measured on CPU, known GPUs' table)"
    )

    def resolve(self, stage: str, *, run: str, artifacts_dir: str, job_id: str = "") -> TrainConfig:
        """The stage's TrainConfig: the preset's recipe with every flag given applied."""
        recipe = preset(
            self.preset, run=run, artifacts_dir=artifacts_dir,
            corpus_dir=self.corpus_dir or "data/corpus", workers=self.workers or 1,
        )  # fmt: skip
        base = next(s for s in recipe.stages if s.stage == stage)
        own = {"preset", "local", "corpus_dir", "gpu"}  # used above or renamed below
        changes: dict[str, Any] = {k: v for k, v in self if k not in own and v is not None}
        if self.gpu is not None:
            changes["use_gpu"] = self.gpu
        if self.identity:
            changes["identity"] = _absolute(self.identity)  # workers may run in another directory
        return replace(base, **changes, job_id=job_id)

    def check(self, stage: str, run: str) -> None:
        self.resolve(stage, run=run, artifacts_dir=_CHECK_ROOT)


class RLFlags(Flags):
    """rl: each flag overrides the RLConfig field it names (`gpu` is `use_gpu`)."""

    local: bool = Field(False, description="run in this process (one worker) instead of on Ray")
    init_from: Text | None = Field(None, description="checkpoint run/stage[/step_N] (default: the run's sft)")
    num_steps: int | None = Field(None, ge=1, description="RL steps")
    questions_per_step: int | None = Field(None, ge=1, description="questions per step, per rank")
    samples_per_question: int | None = Field(None, ge=2, description="the GRPO group size")
    max_new_tokens: int | None = Field(None, ge=1, description="tokens per sampled answer")
    temperature: float | None = Field(None, ge=0, description="sampling temperature")
    top_k: int | None = Field(None, ge=0, description="sample from the k likeliest tokens (0: all)")
    lr_frac: float | None = Field(None, gt=0, le=1, description="fraction of the SFT learning rates")
    device_batch_rows: int | None = Field(None, ge=1, description="completions per forward/backward")
    eval_every_steps: int | None = Field(None, ge=0, description="pass@k every N steps (0: at the end)")
    eval_questions: int | None = Field(None, ge=1, description="held-out questions for pass@k")
    pass_k: int | None = Field(None, ge=1, description="k of pass@k")
    checkpoint_every_steps: int | None = Field(None, ge=1, description="checkpoint every N steps")
    keep_checkpoints: int | None = Field(None, ge=1, description="checkpoints kept")
    task_source: TaskSource | None = Field(None, description="questions: offline (generated) or hub (GSM8K)")
    rows_file: Text | None = Field(None, description="jsonl of GSM8K-schema rows to train on")
    eval_rows_file: Text | None = Field(None, description="jsonl of GSM8K-schema rows to evaluate on")
    offline_rows: int | None = Field(None, ge=1, description="generated rows (offline)")
    tools: Tools | None = Field(None, description="python tool: local, a sandbox URL, or none")
    seed: int | None = Field(None, ge=0, description="random seed")
    workers: int | None = Field(None, ge=1, description="Ray Train workers")
    gpu: bool | None = Field(None, description="one GPU per worker")
    max_failures: int | None = Field(None, ge=0, description="worker-group restarts before the job fails")
    resume: bool | None = Field(None, description="continue from the stage's latest checkpoint")
    metrics_port: MetricsPort = None

    def resolve(self, *, run: str, artifacts_dir: str, job_id: str = "") -> RLConfig:
        values: dict[str, Any] = {k: v for k, v in self if k not in ("local", "gpu") and v is not None}
        if self.gpu is not None:
            values["use_gpu"] = self.gpu
        return RLConfig(**values, run=run, artifacts_dir=artifacts_dir, job_id=job_id)

    def check(self, stage: str, run: str) -> None:
        self.resolve(run=run, artifacts_dir=_CHECK_ROOT)


class EvalFlags(Flags):
    """What `chatforge eval run` measures a checkpoint with (trainer/eval/stage.py's EvalConfig)."""

    corpus_dir: Text = Field("data/corpus", description="bits per byte on its val shards ('' to skip)")
    core_bundle: Text = Field("", description="DCLM-layout CORE bundle (e.g. data/eval/core)")
    core_tasks: list[Label] = Field([], max_length=256, description="CORE task labels (default: all)")
    chat_data: Text = Field("", description="folder of chat eval jsonl (e.g. data/eval/chat), or 'hub'")
    chat_tasks: list[Label] = Field([], max_length=64, description="chat tasks (default: those with data)")
    max_examples: int = Field(0, ge=0, description="cap per task (0: all)")
    batch_rows: int = Field(32, ge=1, description="sequences per forward pass")
    workers: int = Field(1, ge=1, description="Ray workers for CORE (1: no Ray)")
    gpu: bool = Field(False, description="one GPU per Ray worker for CORE")
    tools: Tools = Field("local", description="python tool: local, a sandbox URL, or none")


class EvalStageFlags(EvalFlags):
    """`chatforge train eval`: the latest checkpoint of one of the run's stages."""

    stage: Literal["base", "mid", "sft", "rl"] = Field(
        "sft", description="stage whose latest checkpoint is measured"
    )


class ReportFlags(Flags):
    rate: list[Rate] = Field([], max_length=32, description=RATE_HELP)
    dollars_per_hour: float | None = Field(
        None, ge=0, description="one hourly rate for the whole run's hardware, instead of --rate"
    )
    corpus_dir: Text = Field("", description="measure tokenizer compression on this corpus's val text")


class PipelineFlags(Flags):
    preset: PresetName = Field("tiny", description="recipe for the defaults")
    local: bool = Field(False, description="train in this process (one worker) instead of on Ray")
    corpus_dir: Text = Field("data/corpus", description="parquet corpus")
    workers: int = Field(1, ge=1, description="Ray Train workers per stage")
    redo: list[Literal["tokenizer", "base", "mid", "sft", "rl"]] = Field(
        [], description="stages to run again"
    )
    rl: bool | None = Field(
        None, description="run the RL stage after SFT (default: the preset's choice; on from d12 up)"
    )
    identity: Text | None = Field(
        None, description="identity file for mid and SFT, YAML or JSON (default: trainer/identity.yaml)"
    )
    peak_flops: float | None = Field(
        None, ge=0, description="MFU's peak FLOP/s per device (default: measured on CPU, known GPUs' table)"
    )
    rate: list[Rate] = Field([], max_length=32, description="for the report card's cost: " + RATE_HELP)
    kv_group: KvGroup = None
    window_pattern: WindowPattern = None
    value_embeds: ValueEmbeds = None

    def resolve(self, *, run: str, artifacts_dir: str, job_id: str = "") -> Preset:
        """The preset's recipe with these flags applied; every stage reports to the job's event stream."""
        recipe = preset(self.preset, run=run, artifacts_dir=artifacts_dir, corpus_dir=self.corpus_dir,
                        workers=self.workers)  # fmt: skip
        changes: dict[str, Any] = {"job_id": job_id}
        if self.identity:
            changes["identity"] = _absolute(self.identity)
        if self.peak_flops is not None:
            changes["peak_flops"] = self.peak_flops
        for name in ARCHITECTURE_FLAGS:  # shape the base model; mid and SFT load it as it is
            if getattr(self, name) is not None:
                changes[name] = getattr(self, name)
        rl = replace(recipe.rl, job_id=job_id) if recipe.rl is not None else None
        return replace(
            recipe, stages=tuple(replace(s, **changes) for s in recipe.stages), rl=rl,
            with_rl=recipe.with_rl if self.rl is None else self.rl,
        )  # fmt: skip

    def check(self, stage: str, run: str) -> None:
        self.resolve(run=run, artifacts_dir=_CHECK_ROOT)


StageFlags = TokenizerFlags | TrainFlags | RLFlags | EvalStageFlags | ReportFlags | PipelineFlags
FLAGS: dict[str, type[Flags]] = {
    "tokenizer": TokenizerFlags, **dict.fromkeys(TRAIN_STAGES, TrainFlags), "rl": RLFlags,
    "eval": EvalStageFlags, "report": ReportFlags, "pipeline": PipelineFlags,
}  # fmt: skip


# --- the job spec -----------------------------------------------------------------------------------


def job_process_key(job_id: str) -> str:
    """The Redis key where a job's wrapper (`chatforge.jobrun`) records the session its processes
    run in: a `chatforge.lifetime.ProcessRef` of the session leader, as JSON."""
    return f"chatforge:job:{job_id}:process"


class JobSpec(BaseModel):
    """`POST /v1/jobs`: a stage (or the whole pipeline), a run name, and the stage's flags.

    `config` arrives as a JSON object and is validated as the stage's flags model, then checked the
    way the trainer will check it; every error is located at `config.<flag>`.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_extra=lambda s, _: _one_spec_per_stage(s)
    )

    stage: JobStage
    run: str = Field("demo", pattern=RUN_PATTERN)
    config: StageFlags = Field(
        default_factory=TrainFlags, description="flag values by field name (num_steps, depth, ...)"
    )

    @model_validator(mode="before")
    @classmethod
    def _stage_flags(cls, data: Any) -> Any:
        """Validate `config` as the stage's flags, then against the trainer's own config rules."""
        stage = data.get("stage") if isinstance(data, dict) else None
        if not isinstance(stage, str) or stage not in FLAGS:
            return data  # the stage field reports it
        config = data.get("config", {})
        if isinstance(config, dict) and (launch := [k for k in LAUNCH_FLAGS if k in config]):
            kind = PydanticCustomError("launch_flag", "set by the gateway, not by a job's config")
            details = [InitErrorDetails(type=kind, loc=("config", k), input=config[k]) for k in launch]
            raise ValidationError.from_exception_data(cls.__name__, details)
        try:
            flags = FLAGS[stage].model_validate(config)
        except ValidationError as e:
            raise _located("config", e) from None
        try:
            flags.check(stage, str(data.get("run", "demo")))
        except ConfigError as e:
            raise _config_error(e, flags) from None
        return {**data, "config": flags}

    def argv(self, job_id: str) -> list[str]:
        """`chatforge train`'s arguments for this job: the stage, run, job id, then the flags given."""
        return [self.stage, "--run", self.run, "--job-id", job_id, *to_argv(self.config)]


def _one_spec_per_stage(schema: dict[str, Any]) -> None:
    """JobSpec's published schema: one object per flags model, its stages and their `config`, so
    a schema-valid spec never pairs a stage with another stage's flags (what the validator refuses)."""
    properties = schema.pop("properties")
    required = schema.pop("required", [])
    schema.pop("additionalProperties", None)
    variants = []
    # The anyOf lists StageFlags' members in order (its refs are still pydantic's internal names).
    for ref, model in zip(properties["config"]["anyOf"], get_args(StageFlags), strict=True):
        stages = [stage for stage, flags in FLAGS.items() if flags is model]
        variant = {
            **properties,
            "stage": {**properties["stage"], "enum": stages},
            "config": {**ref, "description": properties["config"].get("description", "")},
        }
        variants.append(
            {"type": "object", "properties": variant, "required": required, "additionalProperties": False}
        )
    schema["oneOf"] = variants


def _located(prefix: str, error: ValidationError) -> ValidationError:
    """The same errors, each located under `prefix` (so the gateway names `config.depth`)."""
    details = [
        InitErrorDetails(type=e["type"], loc=(prefix, *e["loc"]), input=e["input"], ctx=e.get("ctx", {}))
        for e in error.errors()
    ]
    return ValidationError.from_exception_data(error.title, details)


def _config_error(error: ConfigError, flags: Flags) -> ValidationError:
    """A ConfigError as validation errors at `config.<field>` (at `config` when the field it names
    is not a flag of this stage)."""
    details = []
    for name, message in error.problems:
        loc = ("config", name) if name in type(flags).model_fields else ("config",)
        kind = PydanticCustomError("config_error", "{message}", {"message": message})
        details.append(InitErrorDetails(type=kind, loc=loc, input=getattr(flags, name, None)))
    return ValidationError.from_exception_data("JobSpec", details)


# --- flags <-> command line ----------------------------------------------------------------------


def add_flags(parser: argparse.ArgumentParser, flags: type[Flags]) -> None:
    """One argparse option per field of `flags`. Every default is None (not given), so `from_args`
    sees only what was typed and the model supplies the defaults; the model checks the values."""
    for name, field in flags.model_fields.items():
        kind, many, choices = _kind(field.annotation)
        help = field.description or name
        if choices:
            help += f" (one of: {', '.join(map(str, choices))})"
        if field.default not in (None, "", []):
            help += f" (default: {field.default})"
        if kind is bool:
            parser.add_argument(_flag(name), action=argparse.BooleanOptionalAction, default=None, help=help)
        elif many:
            parser.add_argument(_flag(name), nargs="*", default=None, help=help)
        else:
            parser.add_argument(_flag(name), type=kind, default=None, help=help)


def to_argv(flags: Flags) -> list[str]:
    """The command-line words of the flags that were given (the inverse of `add_flags` + `from_args`)."""
    words: list[str] = []
    for name in sorted(flags.model_fields_set):
        value = getattr(flags, name)
        if value is None:
            continue
        if isinstance(value, bool):
            words.append(_flag(name) if value else "--no-" + name.replace("_", "-"))
        elif isinstance(value, list):
            words += [_flag(name), *map(str, value)]  # labels and stage names: never start with "-"
        else:
            text = repr(value) if isinstance(value, float) else str(value)  # repr: the float round-trips
            # "--flag=-x": a value starting with "-" would otherwise be read as an option
            words += [f"{_flag(name)}={text}"] if text.startswith("-") else [_flag(name), text]
    return words


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _absolute(path: str) -> str:
    from pathlib import Path

    return str(Path(path).absolute())


def _kind(annotation: Any) -> tuple[type, bool, tuple[Any, ...]]:
    """(argparse type, is a list, the allowed values of a Literal) of a field's annotation."""
    if get_origin(annotation) in (Union, types.UnionType):
        (annotation,) = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) is list:
        kind, _, choices = _kind(get_args(annotation)[0])
        return kind, True, choices
    if get_origin(annotation) is Literal:
        choices = get_args(annotation)
        return type(choices[0]), False, choices
    return annotation, False, ()
