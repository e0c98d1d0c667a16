"""Settings come from the environment, flags win, and a bad value names the variable to fix."""

from __future__ import annotations

import subprocess
import sys

import pytest
from tokenizer_svc.settings import Settings, SettingsError, load_settings


def test_defaults_and_environment(monkeypatch):
    monkeypatch.delenv("CHATFORGE_ARTIFACTS", raising=False)
    defaults = load_settings()
    assert (defaults.host, defaults.port, defaults.name, defaults.artifacts_root) == (
        "127.0.0.1", 50051, "default", "artifacts",
    )  # fmt: skip
    monkeypatch.setenv("CHATFORGE_TOKENIZER_PORT", "6000")
    monkeypatch.setenv("CHATFORGE_TOKENIZER_NAME", "tok32k")
    monkeypatch.setenv("CHATFORGE_ARTIFACTS", "/srv/artifacts")
    monkeypatch.setenv("CHATFORGE_TOKENIZER_RELOAD_ENABLED", "false")
    s = load_settings()
    assert (s.port, s.name, s.artifacts_root, s.reload_enabled) == (6000, "tok32k", "/srv/artifacts", False)
    assert load_settings(port=7000, name=None).port == 7000  # a flag wins; an unset flag does not
    assert load_settings(port=7000, name=None).name == "tok32k"


@pytest.mark.parametrize(
    "env, value, message",
    [
        ("CHATFORGE_TOKENIZER_PORT", "http", "CHATFORGE_TOKENIZER_PORT (or --port)"),
        ("CHATFORGE_TOKENIZER_PORT", "70000", "less than or equal to 65535"),
        ("CHATFORGE_TOKENIZER_WORKERS", "0", "CHATFORGE_TOKENIZER_WORKERS"),
        ("CHATFORGE_TOKENIZER_MAX_MESSAGE_BYTES", "10", "greater than or equal to 65536"),
    ],
)
def test_bad_values_name_the_variable(monkeypatch, env, value, message):
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert message in str(info.value)


def test_unknown_field_is_refused():
    with pytest.raises(SettingsError, match="CHATFORGE_TOKENIZER_PROT"):
        load_settings(prot=1)


def test_settings_are_frozen():
    with pytest.raises(Exception, match="frozen"):
        Settings().port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "module", ["chatforge.tokenizer_client", "tokenizer_svc.server", "tokenizer_svc.cli", "chatforge.cli"]
)
def test_service_and_client_import_without_torch(module):
    code = f"import sys; sys.modules['torch'] = None; import {module}"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_chatforge_alone_imports_no_grpc():
    code = "import sys, chatforge, chatforge.cli; assert 'grpc' not in sys.modules, 'grpc imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
