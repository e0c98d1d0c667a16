"""The GPU tests: the engine and its attention on a CUDA device, run by `bench/gpu_check.py`.

Every test in this folder is marked `gpu` and runs on the device named by
`CHATFORGE_GPU_TESTS_DEVICE` (default "cuda"). Where that is CUDA and no CUDA device is present
(CI, a laptop) each is skipped with the reason. `CHATFORGE_GPU_TESTS_DEVICE=cpu` runs the same
tests on the CPU, where only the CUDA-only ones (sizing the KV pool from free device memory) skip:
that is how these tests are checked before a GPU run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

DEVICE_ENV = "CHATFORGE_GPU_TESTS_DEVICE"
HERE = Path(__file__).resolve().parent


def selected_device() -> torch.device:
    return torch.device(os.environ.get(DEVICE_ENV, "cuda"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark this folder's tests `gpu`; skip them, with the reason, when their device is absent.
    (pytest hands every conftest all the session's items, so those from elsewhere are left alone.)"""
    device = selected_device()
    absent = device.type == "cuda" and not torch.cuda.is_available()
    skip = pytest.mark.skip(reason=f"needs a CUDA device ({DEVICE_ENV}=cpu runs these tests on the CPU)")
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.gpu)
            if absent:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def device() -> torch.device:
    return selected_device()


@pytest.fixture
def cuda_device(device: torch.device) -> torch.device:
    """For what only CUDA has (free device memory); skipped with the reason on the CPU."""
    if device.type != "cuda":
        pytest.skip(f"CUDA only: nothing to check on {device.type} ({DEVICE_ENV}=cpu)")
    return device


@pytest.fixture(autouse=True)
def one_torch_thread_on_cpu(device: torch.device):
    """On the CPU these tiny models run fastest on one thread (tests/inference/conftest.py measured
    why); restored afterwards."""
    before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
