"""`chatforge chat` against a tiny local checkpoint: one-shot in a real subprocess, multi-turn in process."""

from __future__ import annotations

import argparse
import copy
import io
import os
import subprocess
import sys

import pytest
from inference_svc.cli import _local, chat_loop

from chatforge import checkpoint
from chatforge.artifacts import ArtifactStore
from chatforge.cli import main
from chatforge.contracts.generate import FinishEvent, GenerateRequest, StreamItem, Usage
from chatforge.contracts.sampling import DEFAULT_TEMPERATURE, DEFAULT_TOP_K, SamplingParams
from chatforge.model import GPTConfig

from .conftest import make_tiny_model

CONFIG = GPTConfig(vocab_size=512, n_layer=2, n_embd=64, n_head=4, n_kv_head=2, sequence_len=256)


@pytest.fixture(scope="module")
def store_root(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("artifacts")
    store = ArtifactStore(root)
    tiny_tokenizer.save(store.tokenizer_path("test-tiny"))
    model = make_tiny_model(CONFIG)
    checkpoint.save(
        store.stage_dir("demo", "sft"),
        3,
        model.state_dict(),
        config=CONFIG.to_dict(),
        extra={"tokenizer": "test-tiny"},
    )
    return root


def chatforge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chatforge.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ,
    )


def test_one_shot_chat_streams_an_answer(store_root):
    done = chatforge(
        "chat", "--checkpoint", "demo/sft", "--artifacts", str(store_root), "--prompt", "hello there",
        "--temperature", "0", "--max-tokens", "12",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()  # a random tiny model still says something


def test_unknown_checkpoint_is_one_clear_line(store_root, capsys):
    code = main(["chat", "--checkpoint", "nope/sft", "--artifacts", str(store_root), "--prompt", "hi"])
    assert code == 1
    assert capsys.readouterr().err.startswith("chat: no complete checkpoint for 'nope/sft'")


def test_multi_turn_chat_keeps_the_conversation(store_root):
    args = argparse.Namespace(
        checkpoint="demo/sft", artifacts=str(store_root), device="cpu", tokenizer=None, sandbox_url=None
    )
    reply = _local(args)
    seen: list[GenerateRequest] = []

    def recording_reply(request):
        seen.append(copy.deepcopy(request))
        return reply(request)

    out = io.StringIO()
    stdin = io.StringIO("first question\n\nsecond question\n/quit\n")
    code = chat_loop(
        recording_reply,
        SamplingParams(max_tokens=6, temperature=0.0),
        system="be brief",
        prompt=None,
        stdin=stdin,
        out=out,
    )
    assert code == 0 and len(seen) == 2
    roles = [m["role"] for m in seen[1].messages]
    assert roles == ["system", "user", "assistant", "user"]
    first_answer = seen[1].messages[2]["content"][0]["text"]
    assert first_answer and first_answer in out.getvalue()


def test_sampling_flags_default_to_the_contract(monkeypatch, capsys):
    import inference_svc.cli as cli

    seen: list[GenerateRequest] = []

    def fake_local(args):
        def reply(request):
            seen.append(request)
            yield StreamItem(text="hi")
            yield StreamItem(
                event=FinishEvent(finish_reason="stop", usage=Usage(prompt_tokens=1, completion_tokens=1))
            )

        return reply

    monkeypatch.setattr(cli, "_local", fake_local)
    assert main(["chat", "--checkpoint", "x/sft", "--prompt", "hello"]) == 0
    assert seen[0].sampling == SamplingParams()  # 0.8, top-k 50, 256 tokens: nothing of its own
    assert (
        main(["chat", "--checkpoint", "x/sft", "--prompt", "hello", "--temperature", "0", "--seed", "3"]) == 0
    )
    assert seen[1].sampling == SamplingParams(temperature=0.0, seed=3)
    assert main(["chat", "--checkpoint", "x/sft", "--prompt", "hello", "--max-tokens", "0"]) == 2
    assert "--max-tokens" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["chat", "--help"])
    shown = capsys.readouterr().out
    assert f"(default: {DEFAULT_TEMPERATURE})" in shown and f"(default: {DEFAULT_TOP_K})" in shown
