"""bench/gpu_check.py end to end on the CPU at toy sizes: every phase runs and passes, and the JSON and
Markdown summaries have every section the GPU run will fill in. The GPU run itself is one command on
a machine CI does not have (bench/GPU_CHECK.md); this is what keeps that command working."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PHASES = ("env", "golden", "tests", "throughput", "serving", "real_run", "quality")


@pytest.mark.slow
def test_quick_cpu_check_runs_every_phase_and_writes_both_summaries(tmp_path):
    if not (REPO / "data" / "corpus" / "val_00000.parquet").is_file():
        pytest.fail("the bundled corpus is missing: `make data` builds data/corpus (make test does)")
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--device", "cpu", "--quick", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    last = done.stdout.strip().splitlines()
    assert "gpu_check_phases: 7/7 phases passed on cpu" in done.stdout
    assert re.search(
        r"^gpu_check_quality: [\d.]+ bpb \([\d.]+x vs baseline; goal <=1\.0x\)$", done.stdout, re.M
    )
    # the bench/ headline format, last: `<name>: <value> <unit> (<ratio>x vs <reference>; goal <goal>)`
    assert re.fullmatch(r"gpu_check: [\d,]+ tok/s serving \d+ requests \([\d.]+x vs .+; goal .+\)", last[-1])

    summary = json.loads((out / "gpu_check.json").read_text())
    assert list(summary["phases"]) == list(PHASES)
    for name, phase in summary["phases"].items():
        assert phase["status"] == "passed", (name, phase)
        assert phase["checks"] and all(c["ok"] for c in phase["checks"]), (name, phase["checks"])
    phases = summary["phases"]
    assert phases["env"]["matmul"]["tflops"] > 0
    assert len(phases["golden"]["losses"]) == len(phases["golden"]["golden_losses"])
    assert phases["tests"]["tests"] > 0 and phases["tests"]["failures"] == 0
    # on the CPU only the CUDA-only tests skip, each with its reason
    assert phases["tests"]["skipped_tests"] and all(
        "CUDA only" in t["reason"] for t in phases["tests"]["skipped_tests"]
    )
    for run in phases["throughput"]["runs"]:
        assert run["tokens_per_s"] > 0 and 0 < run["mfu_datasheet"] and run["mfu_measured"] > 0
    serving = phases["serving"]["runs"]
    assert [r["n"] for r in serving] == list(summary["sizes"]["serving_concurrency"])
    assert all(r["vs_padded"] > 0 for r in serving[1:]) and serving[0]["ttft_p50_ms"] > 0
    assert phases["serving"]["default_config"]["tok_s"] > 0  # EngineConfig() as it is, once
    assert phases["real_run"]["curve"] and phases["real_run"]["val_bpb"] > 0
    quality = phases["quality"]["results"]["variants"]
    assert list(quality) == ["baseline", "window", "value_embeds", "gqa", "all"]
    assert quality["baseline"]["ratio"] == 1.0 and all(v["val_bpb"] > 0 for v in quality.values())
    assert summary["headline"] and summary["wall_s"] < summary["budget_s"]

    markdown = (out / "gpu_check.md").read_text()
    for section in ("# GPU check", "## Golden", "## GPU tests", "## Training throughput", "## Serving",
                    "## Real run", "## Quality"):  # fmt: skip
        assert section in markdown
    for name in PHASES:
        assert f"| {name} | passed |" in markdown
    assert (out / "gpu_tests.junit.xml").is_file() and (out / "gpu_check.log").stat().st_size > 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["gpu_check.json", "gpu_check.md", "gpu_check.log", "gpu_tests.junit.xml"]
    )  # at most 8 files come back from the GPU machine


def test_missing_packages_are_one_line_and_a_summary(tmp_path):
    """Where the carried wheels were not installed (the GPU machine's image has no pydantic), the check
    names what is missing and how to bring it, and still writes its summary. `python -S`: no
    site-packages at all, the extreme of that case."""
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-S", "bench/gpu_check.py", "--device", "cpu", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cannot start: missing Python packages ['torch', 'pydantic'," in done.stdout
    assert "run bench/gpu_check.sh, which installs bench/.wheels" in done.stdout
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["phases"] == {} and "pydantic_settings" in summary["error"]
    assert "Could not start" in (out / "gpu_check.md").read_text()


def run_check(out: Path, *flags: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    done = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--device", "cpu", "--quick", "--out", str(out), *flags],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return done, json.loads((out / "gpu_check.json").read_text())


@pytest.mark.slow
def test_a_phase_past_its_limit_is_cut_with_its_process_group(tmp_path):
    """Given 4 s, the tests phase (which starts pytest over tests/gpu in a process of its own) is
    killed, pytest included, and reported as cut with its reason."""
    out = tmp_path / "out"
    done, summary = run_check(out, "--phases", "tests", "--phase-budget", "tests=4")
    assert done.returncode == 1, done.stdout + done.stderr
    tests = summary["phases"]["tests"]
    assert tests["status"] == "cut" and "ran past its 4 s limit and was killed" in tests["reason"]
    assert "| tests | cut (ran past its" in (out / "gpu_check.md").read_text()
    leftover = subprocess.run(["pgrep", "-f", f"junitxml={out}"], capture_output=True, text=True)
    assert leftover.stdout == "", "the cut phase's pytest is still running"


def test_phases_past_the_checks_deadline_are_skipped_and_reported(tmp_path):
    out = tmp_path / "out"
    done, summary = run_check(out, "--phases", "env,serving", "--budget-s", "5")
    assert done.returncode == 1, done.stdout + done.stderr
    assert [p["status"] for p in summary["phases"].values()] == ["skipped", "skipped"]
    assert "the whole check's time budget was spent" in summary["phases"]["serving"]["reason"]
    assert done.stdout.strip().splitlines()[-1].startswith("gpu_check_phases: 0/2 phases passed on cpu")
