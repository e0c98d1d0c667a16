"""The executor's contract: outcomes, limit validation, admission, mode selection, weak mode."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Iterator

import pytest
from sandbox.executor import SandboxExecutor, classify
from sandbox.isolation import SandboxUnavailable, detect_isolation
from sandbox.process import RawRun
from sandbox.settings import Settings, SettingsError, load_settings

from chatforge.tools import ToolLimits

from .conftest import leftover_pids, namespaces_executor

LIMITS = ToolLimits(timeout_s=2.0, memory_mb=128, output_bytes=100)


def raw(**kw: object) -> RawRun:
    base = dict(exit_code=0, stdout=b"", stderr=b"", timed_out=False, output_capped=False, duration_s=0.1)
    return RawRun(**{**base, **kw})  # type: ignore[arg-type]


def test_classify_every_outcome() -> None:
    assert classify(raw(stdout=b"hi\n"), LIMITS).outcome == "ok"
    err = classify(raw(exit_code=1, stderr=b"Traceback\nZeroDivisionError: x\n"), LIMITS)
    assert (err.outcome, err.model_text()) == ("error", "ZeroDivisionError: x")
    mem = classify(raw(exit_code=1, stderr=b"Traceback\nMemoryError\n"), LIMITS)
    assert mem.outcome == "memory" and "128 MB" in mem.message
    assert classify(raw(exit_code=None, timed_out=True), LIMITS).outcome == "timeout"
    assert classify(raw(exit_code=128 + 24), LIMITS).outcome == "timeout"  # SIGXCPU via bubblewrap
    assert classify(raw(exit_code=-24), LIMITS).outcome == "timeout"  # SIGXCPU, direct child
    broken = classify(raw(exit_code=1, stderr=b"bwrap: Creating new namespace failed\n"), LIMITS)
    assert broken.outcome == "unavailable" and "namespace" in broken.message
    cut = classify(raw(exit_code=None, stdout=b"x" * 100, output_capped=True), LIMITS)
    assert cut.outcome == "output_limit" and cut.truncated and "100 bytes" in cut.message
    # A multi-byte character cut at the cap decodes with a replacement, never an exception.
    assert classify(raw(stdout="é".encode()[:1]), LIMITS).stdout == "\ufffd"


def test_limits_are_validated_with_the_field_named(executor: SandboxExecutor) -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        executor.run("print(1)", ToolLimits(timeout_s=0))
    with pytest.raises(ValueError, match="memory_mb"):
        executor.run("print(1)", ToolLimits(memory_mb=10**6))
    with pytest.raises(ValueError, match="output_bytes"):
        executor.run("print(1)", ToolLimits(output_bytes=0))
    assert executor.check_limits(None) == executor.settings.default_limits()


def test_oversize_code_is_an_error_result_not_a_run(executor: SandboxExecutor) -> None:
    result = executor.run("#" * (executor.settings.max_code_bytes + 1))
    assert result.outcome == "error" and "limit" in result.message
    assert executor.pool.waiting == 0 and executor.pool.running == 0


def test_busy_when_slots_and_queue_are_full() -> None:
    with namespaces_executor(max_concurrent=1, max_queue=0) as ex:
        holder = threading.Thread(
            target=ex.run, args=("import time; time.sleep(1)", ToolLimits(timeout_s=15.0))
        )
        holder.start()
        deadline = time.monotonic() + 3
        while ex.pool.running == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        result = ex.run("print(1)")
        holder.join()
        assert result.outcome == "busy" and "busy" in result.message
        assert ex.run("print(1)").outcome == "ok"


def test_unicode_round_trips(executor: SandboxExecutor) -> None:
    result = executor.run("print('东京 😀 naïve')")
    assert result.outcome == "ok" and result.stdout == "东京 😀 naïve\n"


def test_launch_failure_is_unavailable(executor: SandboxExecutor) -> None:
    broken_iso = dataclasses.replace(executor.isolation, bwrap="/nonexistent/bwrap")
    with SandboxExecutor(executor.settings, broken_iso) as broken:
        result = broken.run("print(1)")
    assert result.outcome == "unavailable" and "/nonexistent/bwrap" in result.message


def test_mode_selection(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(SandboxUnavailable, match="not found"):
        detect_isolation(Settings(mode="namespaces", bwrap_path="/nonexistent/bwrap"))
    with caplog.at_level(logging.WARNING):
        iso = detect_isolation(Settings(mode="auto", bwrap_path="/nonexistent/bwrap"))
    assert iso.mode == "weak" and "not found" in iso.reason
    assert "WEAK MODE" in caplog.text
    assert "network-namespace" not in iso.layers()


def test_settings_errors_name_the_variable() -> None:
    with pytest.raises(SettingsError, match="CHATFORGE_SANDBOX_MAX_CONCURRENT"):
        load_settings(max_concurrent=0)
    with pytest.raises(SettingsError, match="default_timeout_s is above max_timeout_s"):
        load_settings(default_timeout_s=100, max_timeout_s=10)


@pytest.fixture(scope="module")
def weak() -> Iterator[SandboxExecutor]:
    with SandboxExecutor(Settings(mode="weak", max_concurrent=2)) as ex:
        yield ex


def test_weak_mode_still_drops_privileges_and_clears_the_environment(weak: SandboxExecutor) -> None:
    os.environ["SANDBOX_WEAK_TEST_SECRET"] = "weak-secret"
    try:
        result = weak.run(
            "import os; print(os.getuid(), open('/proc/self/oom_score_adj').read().strip(), sorted(os.environ), os.getcwd())"
        )
    finally:
        del os.environ["SANDBOX_WEAK_TEST_SECRET"]
    assert result.outcome == "ok", result
    uid, oom, rest = result.stdout.split(" ", 2)
    assert oom == "1000"
    if os.geteuid() == 0:
        assert int(uid) in weak.run_uids
    assert "SECRET" not in rest and "chatforge-sandbox-" in rest


def test_weak_mode_enforces_time_output_and_no_leftovers(weak: SandboxExecutor) -> None:
    assert weak.run("while True: pass", ToolLimits(timeout_s=1.0)).outcome == "timeout"
    assert (
        weak.run("while True: print('x')", ToolLimits(timeout_s=15.0, output_bytes=1000)).outcome
        == "output_limit"
    )
    assert weak.run("x = bytearray(10**10)", ToolLimits(timeout_s=15.0, memory_mb=128)).outcome == "memory"
    daemon = (
        "import os\nif os.fork() == 0:\n    os.setsid()\n    import time\n    time.sleep(60)\nprint('bye')"
    )
    assert weak.run(daemon).stdout == "bye\n"
    if os.geteuid() == 0:
        assert leftover_pids(weak.run_uids, include_zombies=False) == []


def test_run_uids_never_include_nobody() -> None:
    with pytest.raises(SettingsError, match="nobody"):
        load_settings(uid_base=65000, uid_span=1024)
    with pytest.raises(SettingsError, match="uid_span"):
        load_settings(max_concurrent=8, uid_span=4)
