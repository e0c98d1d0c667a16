"""Fixtures of the platform tests."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest


@pytest.fixture
def clean_env() -> Iterator[Callable[[dict[str, str]], None]]:
    """Set exactly the given chatforge variables for the test, restoring the environment after."""
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith("CHATFORGE_") or name == "REDIS_URL":
            del os.environ[name]
    yield os.environ.update
    os.environ.clear()
    os.environ.update(saved)
