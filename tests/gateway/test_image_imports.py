"""The gateway image has no PyTorch: every module it runs must import without it."""

from __future__ import annotations

import subprocess
import sys

IMAGE_MODULES = (
    "gateway.app", "gateway.cli", "gateway.runtime", "gateway.remote_inference",
    "gateway.jobs.kuberay", "gateway.jobs.ray_jobs", "gateway.codec",
)  # fmt: skip


def test_gateway_imports_without_torch():
    code = "import sys; sys.modules['torch'] = None\n" + "\n".join(f"import {m}" for m in IMAGE_MODULES)
    code += "\nassert 'inference_svc.engine' not in sys.modules and 'trainer' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
