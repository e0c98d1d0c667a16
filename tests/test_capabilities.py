"""tests/capabilities.py: the summary `make test` prints first, and the skip reasons it shares."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests import capabilities

SCRIPT = Path(capabilities.__file__)


def test_without_the_system_tools_the_summary_names_each_gap_and_its_fix(tmp_path):
    # An empty PATH hides bwrap and docker (Chromium is also looked for at its absolute path).
    result = subprocess.run(
        [sys.executable, str(SCRIPT)], env={"PATH": str(tmp_path)}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0  # informational: the suite still runs what it can
    lines = result.stdout.splitlines()
    assert lines[0].startswith("make test: ") and "capabilities are missing here" in lines[0], result.stdout
    text = result.stdout
    assert "no bubblewrap (bwrap)" in text and "fix: make deps" in text
    assert "no docker command" in text and "dockerd" in text  # docker/dockerd.sh, or dockerd itself


def test_why_not_is_none_or_a_reason_with_its_fix():
    for cap in capabilities.CAPABILITIES:
        reason = capabilities.why_not(cap.name)
        assert reason is None or capabilities.fix_of(cap) in reason
    with pytest.raises(KeyError, match="unknown capability"):
        capabilities.why_not("teleporter")
