"""The command surface: `tokenizer-client` against a real server, and a frozen list of flags."""

from __future__ import annotations

import json

import pytest
from tokenizer_svc.cli import main

from chatforge.cli import build_parser


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_client_actions(server, capsys, tiny_tokenizer):
    target = ["tokenizer-client", "--target", server.address]
    code, out, _ = _run(capsys, *target, "encode", "hi 東京")
    assert code == 0 and json.loads(out) == tiny_tokenizer.encode("hi 東京")
    ids = [str(i) for i in tiny_tokenizer.encode("hi 東京")]
    assert json.loads(_run(capsys, *target, "decode", *ids)[1]) == "hi 東京"
    assert json.loads(_run(capsys, *target, "count", "hi 東京")[1]) == len(ids)
    info = json.loads(_run(capsys, *target, "info")[1])
    assert info["fingerprint"] == tiny_tokenizer.fingerprint() and info["vocab_size"] == 512
    conversation = json.dumps([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])
    rendered = json.loads(_run(capsys, *target, "render", conversation)[1])
    assert rendered["ids"][0] == tiny_tokenizer.bos_id and rendered["loss_mask"][-1] == 1


def test_client_errors_are_messages(server, capsys):
    target = ["tokenizer-client", "--target", server.address]
    code, _, err = _run(capsys, *target, "render", '[{"role": "assistant", "content": "a"}]')
    assert code == 1 and "expected role 'user'" in err
    code, _, err = _run(capsys, *target, "render", "{not json")
    assert code == 1 and "tokenizer-client:" in err
    code, _, err = _run(capsys, *target, "reload", "missing")
    assert code == 1 and "NOT_FOUND" in err


def test_serve_reports_bad_settings(capsys, monkeypatch):
    monkeypatch.setenv("CHATFORGE_TOKENIZER_WORKERS", "zero")
    code, _, err = _run(capsys, "serve-tokenizer")
    assert code == 2 and "CHATFORGE_TOKENIZER_WORKERS (or --workers)" in err


def _flags(parser) -> set[str]:
    return {opt for action in parser._actions for opt in action.option_strings}


def test_cli_surface_is_frozen():
    """Deployments and scripts call these; a change here must be deliberate."""
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert _flags(sub["serve-tokenizer"]) == {
        "-h", "--help", "--name", "--artifacts", "--host", "--port", "--metrics-port", "--workers",
    }  # fmt: skip
    client = sub["tokenizer-client"]
    assert _flags(client) == {"-h", "--help", "--target", "--timeout-s"}
    actions = next(a for a in client._actions if a.dest == "action").choices
    assert set(actions) == {"encode", "count", "decode", "render", "info", "reload"}
    with pytest.raises(SystemExit):
        main(["no-such-command"])
