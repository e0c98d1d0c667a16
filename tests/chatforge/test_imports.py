"""The light images (gateway, tokenizer, sandbox) carry no PyTorch: their imports must not need it."""

from __future__ import annotations

import subprocess
import sys

import pytest

TORCH_FREE = [
    "chatforge",
    "chatforge.cli",
    "chatforge.chat",
    "chatforge.tokenizer",
    "chatforge.detokenize",
    "chatforge.artifacts",
    "chatforge.checkpoint",
    "chatforge.corpus",
    "chatforge.redisconn",
    "chatforge.lifetime",
    "chatforge.jobrun",
    "chatforge.raylocal",
    "chatforge.settings",
    "chatforge.export.hf",
    "chatforge.export.cli",
]


@pytest.mark.parametrize("module", TORCH_FREE)
def test_module_imports_without_torch(module):
    code = f"import sys; sys.modules['torch'] = None; import {module}"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_cli_help_lists_commands():
    result = subprocess.run(
        [sys.executable, "-m", "chatforge.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "data" in result.stdout
