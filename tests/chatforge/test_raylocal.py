"""`shutdown_ray`: garbage is collected before Ray's shutdown and the collector is paused during it."""

from __future__ import annotations

import gc
import weakref

import pytest

from chatforge.raylocal import shutdown_ray


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.mark.parametrize("enabled", [True, False])
def test_shutdown_collects_cycles_first_and_restores_the_collector(enabled, monkeypatch):
    import ray

    seen: list[tuple[bool, bool]] = []
    # Record, at the moment Ray shuts down, whether the cycle is already gone and the collector paused.
    monkeypatch.setattr(ray, "shutdown", lambda: seen.append((ref() is None, gc.isenabled())))
    node = _Node()
    ref = weakref.ref(node)
    del node
    (gc.enable if enabled else gc.disable)()
    try:
        shutdown_ray()
        assert seen == [(True, False)]
        assert gc.isenabled() is enabled
    finally:
        gc.enable()
