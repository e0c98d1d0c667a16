"""Job specs (chatforge.contracts.jobs): typed per-stage flags, checked by the trainer's own config
rules, every error located at `config.<field>`. The CLI side of the contract is tests/trainer/test_cli.py."""

from __future__ import annotations

import dataclasses
from typing import get_args

import pytest
from pydantic import ValidationError

from chatforge.contracts.jobs import FLAGS, JOB_STAGES, JobSpec, RLFlags, TrainFlags
from chatforge.contracts.training import PRESETS, ConfigError, PresetName, RLConfig, TrainConfig


def _errors(body: dict) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as e:
        JobSpec.model_validate(body)
    return [(".".join(map(str, err["loc"])), err["msg"]) for err in e.value.errors()]


@pytest.mark.parametrize(
    ("config", "field", "says"),
    [
        ({"depth": "abc"}, "config.depth", "valid integer"),
        ({"depth": "2"}, "config.depth", "valid integer"),  # strict: a string is not coerced
        ({"depth": 2.5}, "config.depth", "valid integer"),
        ({"gpu": 1}, "config.gpu", "valid boolean"),
        ({"depth": 0}, "config.depth", "greater than or equal to 1"),
        ({"bogus_flag": 1}, "config.bogus_flag", "Extra inputs"),
        ({"use_gpu": True}, "config.use_gpu", "Extra inputs"),  # the flag is `gpu`
        ({"job_id": "x"}, "config.job_id", "set by the gateway"),
        ({"preset": "d99"}, "config.preset", "'tiny', 'd12', 'd20' or 'd26'"),
        ({"task_source": "web"}, "config.task_source", "'offline' or 'hub'"),
        # cross-field: the trainer's own TrainConfig rules, named by the field at fault
        ({"total_batch_tokens": 1000}, "config.total_batch_tokens", "must be a multiple of"),
        ({"workers": 3, "total_batch_tokens": 4096}, "config.workers", "do not split evenly"),
    ],
)
def test_a_bad_config_is_an_error_naming_the_field(config, field, says):
    (first, *_) = _errors({"stage": "base", "config": config})
    assert first[0] == field and says in first[1], first


def test_an_integral_number_is_an_integer_as_json_schema_reads_it():
    """The published schema says `integer`, and JSON Schema calls 2.0 an integer: accepted as 2."""
    spec = JobSpec.model_validate({"stage": "base", "config": {"depth": 2.0}})
    assert spec.config.depth == 2 and type(spec.config.depth) is int


def test_the_schema_pairs_each_stage_with_its_own_flags():
    """A schema-valid spec never pairs a stage with another stage's flags: one variant per model."""
    variants = JobSpec.model_json_schema()["oneOf"]
    by_stage = {
        stage: v["properties"]["config"]["$ref"].rsplit("/", 1)[-1]
        for v in variants
        for stage in v["properties"]["stage"]["enum"]
    }
    assert by_stage == {stage: flags.__name__ for stage, flags in FLAGS.items()}


def test_every_stage_has_its_own_flags():
    assert (
        _errors({"stage": "tokenizer", "config": {"depth": 4}})[0][0] == "config.depth"
    )  # not a tokenizer flag
    assert (
        _errors({"stage": "rl", "config": {"samples_per_question": 1}})[0][0] == "config.samples_per_question"
    )
    assert _errors({"stage": "eval", "config": {"stage": "tokenizer"}})[0][0] == "config.stage"
    assert _errors({"stage": "pipeline", "config": {"redo": ["eval"]}})[0][0] == "config.redo.0"
    assert _errors({"stage": "report", "config": {"rate": ["H100"]}})[0][0] == "config.rate.0"
    assert _errors({"stage": "eval", "config": {"tools": "ftp://x"}})[0][0] == "config.tools"
    assert _errors({"stage": "bake"})[0][0] == "stage"
    assert _errors({"stage": ["base"]})[0][0] == "stage"  # found by the gateway's fuzz test
    assert _errors({"stage": "base", "run": "../x"})[0][0] == "run"


def test_a_valid_spec_is_typed_and_keeps_what_was_given():
    spec = JobSpec.model_validate({"stage": "sft", "run": "r1", "config": {"num_steps": 5, "gpu": True}})
    assert isinstance(spec.config, TrainFlags) and spec.config.num_steps == 5
    assert spec.config.model_fields_set == {"num_steps", "gpu"}
    assert spec.argv("job-1") == ["sft", "--run", "r1", "--job-id", "job-1", "--gpu", "--num-steps", "5"]
    cfg = spec.config.resolve("sft", run="r1", artifacts_dir="/a", job_id="job-1")
    assert (cfg.num_steps, cfg.use_gpu, cfg.depth, cfg.job_id) == (5, True, 2, "job-1")  # depth: tiny's
    assert JobSpec(stage="rl").config == RLFlags()  # no config: the stage's defaults


# Config fields a job cannot set: the launch (run, job id, store), `use_gpu` (its flag is `gpu`),
# recipe details left to the presets, and the tests' fault injection. A new config field must be
# added here or become a flag, so the API is a decision, not an accident.
NOT_TRAIN_FLAGS = {
    "stage", "run", "artifacts_dir", "job_id", "use_gpu", "tokens_per_param", "unit_docs",
    "unit_conversations", "optim", "eval_batches", "keep_checkpoints", "compile", "fail_at_step", "fail_marker",
}  # fmt: skip
NOT_RL_FLAGS = {"run", "artifacts_dir", "job_id", "use_gpu", "fail_at_step", "fail_marker"}


def test_the_flags_map_onto_the_trainers_config_fields():
    """Every override flag is a field of the config it overrides (`gpu` is `use_gpu`), so `resolve`
    applies each one, and the presets are the contract's Literal."""
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(TrainFlags.model_fields) - {"preset", "local", "gpu"} == train_fields - NOT_TRAIN_FLAGS
    rl_fields = {f.name for f in dataclasses.fields(RLConfig)}
    assert set(RLFlags.model_fields) - {"local", "gpu"} == rl_fields - NOT_RL_FLAGS
    assert set(get_args(PresetName)) == set(PRESETS)
    assert set(FLAGS) == set(JOB_STAGES)


def test_strings_that_look_like_options_survive_the_command_line():
    spec = JobSpec(stage="base", config={"init_from": "-x/base"})
    assert "--init-from=-x/base" in spec.argv("j")


def test_the_architecture_options_are_flags_of_a_base_job():
    spec = JobSpec.model_validate(
        {"stage": "base", "config": {"kv_group": 2, "window_pattern": "SSSL", "value_embeds": True}}
    )
    assert set(spec.argv("j")) >= {"--kv-group", "2", "--window-pattern", "SSSL", "--value-embeds"}
    cfg = spec.config.resolve("base", run="r", artifacts_dir="/a")
    assert (cfg.kv_group, cfg.window_pattern, cfg.value_embeds) == (2, "SSSL", True)
    assert TrainConfig(stage="base", run="r", artifacts_dir="/a").window_pattern == "L"  # off by default
    assert _errors({"stage": "base", "config": {"window_pattern": "SXL"}})[0][0] == "config.window_pattern"
    assert _errors({"stage": "base", "config": {"kv_group": 0}})[0][0] == "config.kv_group"
    assert _errors({"stage": "base", "config": {"value_embeds": "yes"}})[0][0] == "config.value_embeds"
    with pytest.raises(ConfigError, match="--window-pattern must be 1-64 letters"):
        TrainConfig(stage="base", run="r", artifacts_dir="/a", window_pattern="")


def test_a_pipeline_takes_the_architecture_options_for_its_base_model():
    spec = JobSpec.model_validate(
        {"stage": "pipeline", "config": {"window_pattern": "SL", "value_embeds": True}}
    )
    recipe = spec.config.resolve(run="r", artifacts_dir="/a")
    assert all((s.window_pattern, s.value_embeds, s.kv_group) == ("SL", True, 1) for s in recipe.stages)
    assert "--window-pattern" in spec.argv("j") and "--value-embeds" in spec.argv("j")
    assert _errors({"stage": "pipeline", "config": {"window_pattern": "X"}})[0][0] == "config.window_pattern"
