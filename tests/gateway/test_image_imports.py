"""The gateway image has no PyTorch and no Ray: every module it runs must import without them.

This is the fast check, in the development venv (where torch and ray are installed, so it checks
that nothing imports them); tests/platform/test_images.py installs the gateway with only its extra
in a fresh venv, where they cannot be imported at all.
"""

from __future__ import annotations

import subprocess
import sys

IMAGE_MODULES = (
    "gateway.app", "gateway.cli", "gateway.runtime", "gateway.remote_inference",
    "gateway.jobs.kuberay", "gateway.jobs.ray_jobs", "gateway.codec",
)  # fmt: skip
NOT_IN_THE_IMAGE = ("torch", "ray", "trainer", "inference_svc", "sandbox", "tokenizer_svc")


def test_gateway_imports_without_torch_or_ray():
    code = "import sys; sys.modules['torch'] = None; sys.modules['ray'] = None\n"
    code += "\n".join(f"import {m}" for m in IMAGE_MODULES)
    code += f"\nloaded = [m for m in {NOT_IN_THE_IMAGE!r} if sys.modules.get(m) is not None]"
    code += "\nassert not loaded, loaded"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
