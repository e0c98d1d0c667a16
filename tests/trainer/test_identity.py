"""The identity file: parsed and checked at the edge, then the mid/SFT mixtures' identity task."""

from __future__ import annotations

import json

import pytest

from trainer.identity import DEFAULT_IDENTITY, IdentityError, default_identity, load_identity
from trainer.tasks.mixtures import mixture

ADA = """
name: Ada
maker: the Lovelace lab
persona: a small assistant trained on our lab notes
greetings: ["Hello, I am {name}."]
conversations:
  - - {role: user, content: "What is your name?"}
    - {role: assistant, content: "My name is {name}, made by {maker}."}
  - messages:
      - {role: user, content: "Who are you?"}
      - {role: assistant, content: "I am {name}, {persona}."}
"""


def test_the_default_identity_ships_with_the_trainer():
    identity = load_identity()
    assert DEFAULT_IDENTITY.is_file() and identity == default_identity()
    assert identity.name == "chatforge" and identity.system_prompt == "You are chatforge."
    texts = [m["content"] for conv in identity.conversations for m in conv]
    assert "My name is chatforge." in texts
    assert not any("{name}" in t or "{maker}" in t for t in texts)  # every placeholder filled


def test_a_custom_identity_fills_the_mixtures_identity_task(tmp_path):
    path = tmp_path / "ada.yaml"
    path.write_text(ADA)
    ada = load_identity(path)
    assert ada.conversations[0][1]["content"] == "My name is Ada, made by the Lovelace lab."
    for stage in ("mid", "sft"):
        mix = mixture(stage, "train", rows=60, identity=ada)
        rows = [mix[i] for i in range(len(mix)) if mix.task_of(i) == "identity"]
        assert rows, stage
        said = {m.text for c in rows for m in c.messages if m.role == "assistant"}
        assert "My name is Ada, made by the Lovelace lab." in said
        assert not any("chatforge" in text for text in said)  # the default name is gone
        prompts = {c.messages[0].text for i in range(len(mix)) if mix.task_of(i) == "smoltalk"
                   for c in [mix[i]] if c.messages[0].role == "system"}  # fmt: skip
        assert "You are Ada." in prompts and "You are chatforge." not in prompts
    as_json = tmp_path / "ada.json"
    as_json.write_text(json.dumps({"name": "Ada", "maker": "m", "persona": "p",
                                   "conversations": [[{"role": "user", "content": "hi"},
                                                      {"role": "assistant", "content": "I am {name}."}]]}))  # fmt: skip
    assert load_identity(as_json).conversations[0][1]["content"] == "I am Ada."


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: Ada\nmaker: m\nconversations: [[{role: user, content: hi}, {role: assistant, content: yo}]]",
         "`persona` must be a non-empty string"),
        ("name: Ada\nmaker: m\npersona: p\nconversations: []", "`conversations` must be a non-empty list"),
        ("name: Ada\nmaker: m\npersona: p\nconversations: [[{role: user, content: hi}]]",
         "conversations[0] must end with the assistant's answer"),
        ("name: Ada\nmaker: m\npersona: p\nconversations: [[{role: assistant, content: hi}]]",
         "conversations[0]:"),
        ("name: Ada\nmaker: m\npersona: p\ncolour: red\nconversations: []", "unknown field(s) ['colour']"),
        ("name: [unclosed", "not valid YAML"),
        ("- just a list", "expected a mapping"),
    ],
)  # fmt: skip
def test_a_bad_identity_file_is_one_clear_error(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(IdentityError) as e:
        load_identity(path)
    assert message in str(e.value) and str(path) in str(e.value)


def test_an_oversized_or_missing_identity_file_is_refused_before_reading(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (2 << 20))
    with pytest.raises(IdentityError, match="an identity file is at most"):
        load_identity(big)
    with pytest.raises(IdentityError, match="cannot read it"):
        load_identity(tmp_path / "absent.yaml")
