"""bench/quality.py --quick end to end: every variant trains on the bundled corpus for the same tokens
and the closing lines are the bench/ headline format, each ratio against the same run's baseline."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINE = r"(quality_\w+): ([\d.]+) bpb \(([\d.]+)x vs baseline; goal <=1\.0x\)"


@pytest.mark.slow
def test_quick_run_reports_every_option_against_the_baseline(tmp_path):
    if not (REPO / "data" / "corpus" / "val_00000.parquet").is_file():
        pytest.fail("the bundled corpus is missing: `make data` builds data/corpus (make test does)")
    out = tmp_path / "quality.json"
    done = subprocess.run(
        [sys.executable, "bench/quality.py", "--quick", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    results = json.loads(out.read_text())
    variants = results["variants"]
    assert list(variants) == ["baseline", "window", "value_embeds", "gqa", "all"]
    tokens = {v["tokens"] for v in variants.values()}
    assert len(tokens) == 1 and tokens.pop() > 0  # equal tokens for every variant
    # each variant trained the model its options ask for, as its checkpoint's config records
    models = {name: v["model"] for name, v in variants.items()}
    assert models["baseline"] == {"n_head": 2, "n_kv_head": 2, "window_pattern": "L", "short_window": 0,
                                  "value_embeds": False}  # fmt: skip
    assert models["window"]["window_pattern"] == "SSSL" and models["window"]["short_window"] == 32
    assert models["value_embeds"]["value_embeds"] and models["gqa"]["n_kv_head"] == 1
    assert models["all"] == {"n_head": 2, "n_kv_head": 1, "window_pattern": "SSSL", "short_window": 32,
                             "value_embeds": True}  # fmt: skip
    base = variants["baseline"]["val_bpb"]
    assert all(math.isfinite(v["val_bpb"]) and 0 < v["val_bpb"] < 10 for v in variants.values())
    # the headline lines: one per option, the combination last, each ratio to this run's baseline
    parsed = [re.fullmatch(LINE, line) for line in lines[-4:]]
    assert all(parsed), lines[-4:]
    names = [m.group(1) for m in parsed if m]
    assert names == ["quality_window", "quality_value_embeds", "quality_gqa", "quality_bpb"]
    for m, name in zip(parsed, ["window", "value_embeds", "gqa", "all"], strict=True):
        assert m is not None
        assert float(m.group(2)) == pytest.approx(variants[name]["val_bpb"], abs=1e-4)
        assert float(m.group(3)) == pytest.approx(variants[name]["val_bpb"] / base, abs=1e-3)


def test_bad_flags_are_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "bench/quality.py", "--quick", "--variants", "window,bigger"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert "--variants: unknown ['bigger']" in done.stderr
