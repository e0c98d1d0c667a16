"""The `chatforge train/pipeline/demo` command surface and its error messages."""

from __future__ import annotations

import pytest

from chatforge.cli import build_parser, main
from trainer.cli import TRAIN_FLAGS, stage_config


def test_cli_surface_is_frozen():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    assert {"train", "pipeline", "demo"} <= set(sub)
    stages = next(a for a in sub["train"]._actions if a.dest == "stage").choices
    assert list(stages) == ["tokenizer", "base", "mid", "sft", "eval", "rl", "report", "pipeline"]
    flags = {o for a in stages["base"]._actions for o in a.option_strings}
    expected = {"--" + f.replace("_", "-") for f in TRAIN_FLAGS} | {
        "--run", "--artifacts", "--preset", "--local", "--gpu", "--no-resume", "-h", "--help",
    }  # fmt: skip
    assert flags == expected


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
        (["--depth", "0"], "--depth must be >= 1"),
        (["--task-source", "web"], "--task-source must be 'offline' or 'hub'"),
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


def test_every_jobs_api_stage_is_a_train_subcommand():
    # The gateway runs `chatforge train <stage> --run R --job-id ID --flag value` for every stage it
    # accepts; each must parse, and eval measures `run/<stage>`.
    from gateway.jobs.spec import STAGES, JobRequest, entrypoint

    parser = build_parser()
    for stage in STAGES:
        config = {"stage": "mid"} if stage == "eval" else {}
        words = entrypoint(
            "chatforge train", JobRequest(stage=stage, run="r1", config=config), "job-1"
        ).split()
        args = parser.parse_args(words[1:])
        assert args.run == "r1" and getattr(args, "job_id", "job-1") == "job-1"
        if stage == "eval":
            assert args.stage == "mid"
