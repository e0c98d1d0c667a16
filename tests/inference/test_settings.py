"""The inference service's one Settings object: environment, flags and Serve args build the same thing."""

from __future__ import annotations

import pytest
from gateway.settings import Settings as GatewaySettings
from inference_svc.config import EngineConfig
from inference_svc.serve import app_builder
from inference_svc.settings import SettingsError, load_settings

from chatforge.cli import main


def test_defaults_and_flat_engine_fields(monkeypatch):
    monkeypatch.delenv("CHATFORGE_INFERENCE_PORT", raising=False)
    s = load_settings(checkpoint="demo/sft", num_blocks=64, max_num_seqs=8)
    assert s.engine == EngineConfig(num_blocks=64, max_num_seqs=8)
    # the gateway's own port and the inference URL it expects do not clash with each other
    gateway = GatewaySettings()
    assert s.port != gateway.port and gateway.inference_url.endswith(f":{s.port}")


def test_environment_reaches_nested_engine_fields_and_flags_win(monkeypatch):
    monkeypatch.setenv("CHATFORGE_INFERENCE_CHECKPOINT", "env/sft")
    monkeypatch.setenv("CHATFORGE_INFERENCE_ENGINE__MAX_NUM_SEQS", "7")
    monkeypatch.setenv("CHATFORGE_INFERENCE_MAX_REPLICAS", "3")
    s = load_settings(max_replicas=2)
    assert (s.checkpoint, s.engine.max_num_seqs, s.max_replicas) == ("env/sft", 7, 2)


def test_bad_values_name_the_variable_and_the_flag(monkeypatch):
    monkeypatch.setenv("CHATFORGE_INFERENCE_ENGINE__BLOCK_SIZE", "0")
    with pytest.raises(SettingsError) as refused:
        load_settings(checkpoint="x", max_replicas=1, min_replicas=2)
    message = str(refused.value)
    assert "CHATFORGE_INFERENCE_ENGINE__BLOCK_SIZE (or --block-size)" in message
    with pytest.raises(SettingsError, match="CHATFORGE_INFERENCE_CHECKPOINT"):
        load_settings()


def test_serve_config_file_args_are_validated_like_flags():
    with pytest.raises(SettingsError, match="CHATFORGE_INFERENCE_NUM_BLOKS"):
        app_builder({"checkpoint": "demo/sft", "num_bloks": 8})
    with pytest.raises(SettingsError, match="NUM_BLOCKS"):
        app_builder({"checkpoint": "demo/sft", "num_blocks": -1})


def test_cli_reports_bad_settings_in_one_message(capsys):
    assert main(["inference", "serve", "--checkpoint", "demo/sft", "--port", "70000"]) == 2
    err = capsys.readouterr().err
    assert "CHATFORGE_INFERENCE_PORT (or --port)" in err and "Traceback" not in err
