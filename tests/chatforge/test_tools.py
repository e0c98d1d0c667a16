"""`tool_executor_from`: a setting becomes a ToolExecutor through a URL or an installed plugin,
so no caller (the trainer above all) imports the sandbox's package."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import Any

import pytest

from chatforge import tools
from chatforge.sandbox_client import SandboxClient
from chatforge.tools import ENTRY_POINT_GROUP, ToolLimits, ToolResult, tool_executor_from


class _Echo:
    def run(self, code: str, limits: ToolLimits | None = None) -> ToolResult:
        return ToolResult("ok", stdout=code)


def _only(monkeypatch: pytest.MonkeyPatch, **plugins: str) -> None:
    found = {name: EntryPoint(name, value, ENTRY_POINT_GROUP) for name, value in plugins.items()}
    monkeypatch.setattr(tools, "installed_tool_executors", lambda: found)


def test_none_and_urls_need_no_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    _only(monkeypatch)
    assert tool_executor_from("none") is None and tool_executor_from("") is None
    client = tool_executor_from(" http://127.0.0.1:8092/ ")
    assert isinstance(client, SandboxClient) and client.base_url == "http://127.0.0.1:8092"
    assert isinstance(tool_executor_from("https://sandbox.example:8092"), SandboxClient)


def test_local_is_the_sandbox_executor_registered_as_an_entry_point() -> None:
    entry = tools.installed_tool_executors().get("local")
    assert entry is not None, f"no 'local' in {ENTRY_POINT_GROUP}: run `pip install -e .` again"
    assert entry.value == "sandbox.executor:SandboxExecutor"
    executor: Any = tool_executor_from("local")
    try:
        assert type(executor).__module__ == "sandbox.executor"
        assert type(executor).__name__ == "SandboxExecutor"
        result = executor.run("print(6 * 7)", ToolLimits(timeout_s=10.0))
        assert (result.outcome, result.stdout.strip()) == ("ok", "42"), result
    finally:
        executor.close()


def test_any_installed_plugin_resolves_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    _only(monkeypatch, echo=f"{__name__}:_Echo")
    executor = tool_executor_from("echo")
    assert isinstance(executor, _Echo) and executor.run("hi").stdout == "hi"


def test_an_unknown_name_lists_the_installed_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    _only(monkeypatch, local="sandbox.executor:SandboxExecutor", echo=f"{__name__}:_Echo")
    with pytest.raises(ValueError, match=r"'nope'.*none.*URL.*echo, local"):
        tool_executor_from("nope")
    _only(monkeypatch)
    with pytest.raises(ValueError, match="none installed"):
        tool_executor_from("local")


def test_a_plugin_whose_package_is_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _only(monkeypatch, local="no_such_package_here.executor:Executor")
    with pytest.raises(ValueError, match=r"'local'.*cannot be imported here.*no_such_package_here"):
        tool_executor_from("local")
