"""The `chatforge train/pipeline/demo` command surface and its error messages."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from chatforge.cli import build_parser, main
from chatforge.contracts.jobs import FLAGS, JOB_STAGES, JobSpec, TrainFlags
from trainer.cli import stage_config
from trainer.identity import DEFAULT_IDENTITY

LAUNCH = {"run", "artifacts", "job_id", "help"}  # set by whoever launches, not flags of a job


def _subcommands(parser, dest):
    return next(a for a in parser._actions if a.dest == dest).choices


def test_cli_surface_is_frozen():
    sub = _subcommands(build_parser(), "command")
    assert {"train", "pipeline", "demo", "rl", "report", "eval"} <= set(sub)
    stages = _subcommands(sub["train"], "stage")
    assert list(stages) == ["tokenizer", "base", "mid", "sft", "eval", "rl", "report", "pipeline"]
    options = {o for a in stages["base"]._actions for o in a.option_strings}
    assert {"--depth", "--num-steps", "--gpu", "--no-gpu", "--no-resume", "--preset", "--local"} <= options


@pytest.mark.parametrize("stage", JOB_STAGES)
def test_each_stages_flags_are_its_contract_model(stage):
    """`chatforge train <stage>` accepts exactly the flags the gateway validates a job's config
    against (chatforge.contracts.jobs), plus the launch flags: the CLI and the API cannot drift."""
    parser = _subcommands(_subcommands(build_parser(), "command")["train"], "stage")[stage]
    dests = {a.dest for a in parser._actions}
    assert dests - LAUNCH == set(FLAGS[stage].model_fields)
    assert LAUNCH <= dests


def test_top_level_commands_share_the_stage_models():
    sub = _subcommands(build_parser(), "command")
    assert {a.dest for a in sub["pipeline"]._actions} - LAUNCH == set(FLAGS["pipeline"].model_fields)
    assert {a.dest for a in sub["rl"]._actions} - LAUNCH == set(FLAGS["rl"].model_fields)


def test_flags_override_the_preset(tmp_path):
    args = build_parser().parse_args(
        ["train", "mid", "--run", "x", "--artifacts", str(tmp_path), "--depth", "3", "--num-steps", "7",
         "--job-id", "job-1", "--no-resume"]
    )  # fmt: skip
    cfg = stage_config(args)
    assert (cfg.stage, cfg.run, cfg.depth, cfg.num_steps, cfg.job_id, cfg.resume) == (
        "mid",
        "x",
        3,
        7,
        "job-1",
        False,
    )
    assert cfg.sequence_len == 256  # from the tiny preset
    assert cfg.artifacts_dir == str(tmp_path)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--total-batch-tokens", "1000"], "--total-batch-tokens (1000) must be a multiple"),
        (["--workers", "3", "--total-batch-tokens", "4096"], "do not split evenly over --workers 3"),
        (["--workers", "2"], "a local run has one worker"),
        (["--depth", "0"], "--depth: Input should be greater than or equal to 1"),
        (["--task-source", "web"], "--task-source: Input should be 'offline' or 'hub'"),
        (["--identity", "/nonexistent/me.yaml"], "--identity /nonexistent/me.yaml: cannot read it"),
        (["--peak-flops", "-1"], "--peak-flops: Input should be greater than or equal to 0"),
    ],
)
def test_bad_flags_fail_with_a_message_naming_the_flag(argv, message, tmp_path, capsys):
    assert main(["train", "sft", "--artifacts", str(tmp_path), "--local", *argv]) == 1
    assert message in capsys.readouterr().err


def test_missing_tokenizer_says_what_to_run(tmp_path, capsys):
    assert main(["train", "base", "--artifacts", str(tmp_path), "--local", "--run", "nope"]) == 1
    err = capsys.readouterr().err
    assert "no tokenizer named 'nope'" in err and "chatforge train tokenizer" in err


def test_demo_without_a_corpus_says_how_to_build_it(tmp_path, capsys):
    assert main(["demo", "--data", str(tmp_path / "none"), "--run-dir", str(tmp_path / "run")]) == 1
    assert "chatforge data corpus" in capsys.readouterr().err


def test_tokenizer_stage_trains_once_then_skips(tmp_path, corpus_dir, capsys):
    argv = ["train", "tokenizer", "--artifacts", str(tmp_path), "--run", "tk", "--corpus-dir", str(corpus_dir),
            "--vocab-size", "300"]  # fmt: skip
    assert main(argv) == 0
    assert (tmp_path / "tokenizers" / "tk" / "tokenizer.json").is_file()
    assert main(argv) == 0
    assert "skipping" in capsys.readouterr().out


# A config per stage with every kind of value a flag takes: ints, floats, strings, Literals, both
# booleans, lists, and a string that starts with "-".
ROUND_TRIP = {
    "tokenizer": {"vocab_size": 300, "corpus_dir": "/data/c", "redo": True, "preset": "d12"},
    "base": {
        "depth": 3,
        "num_steps": 7,
        "seed": 1,
        "gpu": True,
        "resume": False,
        "task_source": "hub",
        "init_from": "-odd/name",
        "workers": 2,
        "metrics_port": 9100,
    },  # fmt: skip
    "mid": {"identity": str(DEFAULT_IDENTITY), "peak_flops": 150e9},  # a file that exists: it is read
    "sft": {"total_batch_tokens": 8192, "local": True, "tokenizer": "tk"},
    "rl": {
        "num_steps": 3,
        "lr_frac": 0.1,
        "temperature": 0.7,
        "gpu": False,
        "tools": "none",
        "rows_file": "rows.jsonl",
    },  # fmt: skip
    "eval": {
        "stage": "mid",
        "core_tasks": ["hellaswag", "arc_easy"],
        "chat_tasks": [],
        "corpus_dir": "",
        "max_examples": 16,
        "gpu": True,
        "tools": "http://127.0.0.1:8002",
    },  # fmt: skip
    "report": {"dollars_per_hour": 3.5, "corpus_dir": "data/corpus", "rate": ["H100=2.5", "cpu=0.05"]},
    "pipeline": {
        "redo": ["base", "rl"],
        "workers": 2,
        "local": False,
        "rl": True,
        "identity": "/ids/me.json",
        "rate": ["cpu=0.05"],
    },
}


@pytest.mark.parametrize("stage", JOB_STAGES)
def test_a_job_specs_command_line_parses_back_into_the_same_flags(stage, tmp_path):
    """What the gateway runs for a job (`chatforge train <stage> --run R --job-id ID --flag v ...`)
    is parsed by the real `chatforge` parser into the same typed flags and, for the training
    stages, the same TrainConfig the gateway checked."""
    spec = JobSpec.model_validate({"stage": stage, "run": "r1", "config": ROUND_TRIP[stage]})
    words = shlex.split(shlex.join(["chatforge", "train", *spec.argv("job-1")]))
    args = build_parser().parse_args([*words[1:], "--artifacts", str(tmp_path)])
    assert (args.run, args.job_id) == ("r1", "job-1")
    flags = FLAGS[stage].from_args(args)
    assert flags == spec.config
    assert flags.model_fields_set == spec.config.model_fields_set  # nothing added or lost on the way
    if isinstance(flags, TrainFlags):
        cfg = stage_config(args)
        assert cfg == spec.config.resolve(stage, run="r1", artifacts_dir=str(tmp_path), job_id="job-1")
        assert (cfg.stage, cfg.run, cfg.job_id) == (stage, "r1", "job-1")


def test_flags_are_typed_on_the_command_line_too(tmp_path):
    argv = ["train", "base", "--depth", "4", "--gpu", "--no-resume", "--artifacts", str(tmp_path)]
    args = build_parser().parse_args(argv)
    cfg = stage_config(args)
    assert (cfg.depth, cfg.use_gpu, cfg.resume) == (4, True, False)
    with pytest.raises(SystemExit):  # argparse: not an int
        build_parser().parse_args(["train", "base", "--depth", "abc"])


def test_the_pipeline_runs_rl_where_the_preset_says_unless_told(tmp_path):
    from chatforge.contracts.jobs import PipelineFlags

    def recipe(*argv: str):  # type: ignore[no-untyped-def]
        args = build_parser().parse_args(["pipeline", "--artifacts", str(tmp_path), *argv])
        return PipelineFlags.from_args(args).resolve(run="r", artifacts_dir=str(tmp_path), job_id="j")

    assert not recipe().with_rl and recipe("--rl").with_rl  # tiny: off unless asked
    for name in ("d12", "d20", "d26"):
        assert recipe("--preset", name).with_rl and not recipe("--preset", name, "--no-rl").with_rl
    forced = recipe("--rl", "--identity", "me.yaml", "--peak-flops", "2e11")
    assert forced.rl is not None and forced.rl.job_id == "j" and forced.rl.run == "r"
    assert {s.identity for s in forced.stages} == {str(Path("me.yaml").absolute())}
    assert {s.peak_flops for s in forced.stages} == {2e11}
