"""The model's identity: its name, its maker, a persona and example conversations, from a file.

Midtraining and SFT mix conversations made from the identity into their data (the `identity` task
of `trainer.tasks.mixtures`), and one of the system prompts of the generated instructions names
the model; nothing else in the trainer hard-codes who the model is. The default identity ships as
`trainer/identity.yaml`; `--identity <file>` (YAML or JSON, same fields) replaces it. `{name}`,
`{maker}` and `{persona}` in a message are replaced by the fields of the same name.

    name: Ada
    maker: the Lovelace lab
    persona: a small assistant trained on our own notes
    greetings: ["Hello! I am {name}."]            # optional
    conversations:
      - - {role: user, content: "What is your name?"}
        - {role: assistant, content: "My name is {name}."}
"""

from __future__ import annotations

import functools
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatforge.chat import ConversationError, parse_conversation
from chatforge.contracts.training import ConfigError

DEFAULT_IDENTITY = Path(__file__).with_name("identity.yaml")
MAX_IDENTITY_BYTES = 1 << 20  # a persona file, not a dataset: a larger file is a mistake
GREETINGS = ("Hi!", "Hello.", "Hey there.", "Good morning!")  # what the user opens with
GREETING_SHARE = 0.3  # of identity rows that start with a greeting exchange


class IdentityError(ConfigError):
    """An identity file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Identity:
    name: str
    maker: str
    persona: str
    conversations: tuple[tuple[dict[str, str], ...], ...]  # messages, placeholders filled in
    greetings: tuple[str, ...] = ()
    source: str = ""  # the file it came from

    def fill(self, text: str) -> str:
        """`text` with {name}, {maker} and {persona} replaced (other braces are left as they are)."""
        for key in ("name", "maker", "persona"):
            text = text.replace("{" + key + "}", getattr(self, key))
        return text

    def row(self, rng: random.Random) -> dict[str, Any]:
        """One identity conversation in SmolTalk's schema: an example, sometimes after a greeting."""
        messages = [dict(m) for m in rng.choice(self.conversations)]
        if self.greetings and rng.random() < GREETING_SHARE:
            opening = [{"role": "user", "content": rng.choice(GREETINGS)},
                       {"role": "assistant", "content": rng.choice(self.greetings)}]  # fmt: skip
            messages = opening + messages
        return {"messages": messages}

    @property
    def system_prompt(self) -> str:
        return f"You are {self.name}."


@functools.cache
def default_identity() -> Identity:
    """The identity shipped with the trainer (`trainer/identity.yaml`), read once."""
    return load_identity(DEFAULT_IDENTITY)


def load_identity(path: str | Path = "") -> Identity:
    """The identity in `path` (YAML or JSON); the default identity when `path` is empty."""
    file = Path(path) if path else DEFAULT_IDENTITY
    try:
        size = file.stat().st_size
    except OSError as e:
        raise IdentityError(f"--identity {file}: cannot read it ({e.strerror})") from None
    if size > MAX_IDENTITY_BYTES:
        raise IdentityError(
            f"--identity {file}: {size:,} bytes; an identity file is at most {MAX_IDENTITY_BYTES:,}"
        )
    text = file.read_text(encoding="utf-8", errors="replace")
    if file.suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as e:
            raise IdentityError(f"--identity {file}: not valid JSON: {e}") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise IdentityError(f"--identity {file}: not valid YAML: {e}") from None
    return identity_from(data, source=str(file))


def identity_from(data: Any, *, source: str = "") -> Identity:
    """Check and build an Identity from parsed YAML/JSON; errors name the field."""
    where = f"--identity {source}" if source else "identity"
    if not isinstance(data, dict):
        raise IdentityError(f"{where}: expected a mapping with name, maker, persona and conversations")
    unknown = set(data) - {"name", "maker", "persona", "greetings", "conversations"}
    if unknown:
        raise IdentityError(f"{where}: unknown field(s) {sorted(unknown)}")
    fields: dict[str, str] = {}
    for key in ("name", "maker", "persona"):
        value = data.get(key)
        if not isinstance(value, str) or not value.strip():
            raise IdentityError(f"{where}: `{key}` must be a non-empty string")
        fields[key] = value.strip()
    greetings = data.get("greetings") or []
    if not isinstance(greetings, list) or not all(isinstance(g, str) and g.strip() for g in greetings):
        raise IdentityError(f"{where}: `greetings` must be a list of non-empty strings")
    raw = data.get("conversations")
    if not isinstance(raw, list) or not raw:
        raise IdentityError(f"{where}: `conversations` must be a non-empty list of conversations")
    identity = Identity(**fields, conversations=(), greetings=(), source=source)
    conversations = []
    for i, conv in enumerate(raw):
        messages = conv.get("messages") if isinstance(conv, dict) else conv
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages
        ):
            raise IdentityError(
                f"{where}: conversations[{i}] must be a list of {{role, content}} with text content"
            )
        try:
            parsed = parse_conversation(messages)
        except ConversationError as e:
            raise IdentityError(f"{where}: conversations[{i}]: {e}") from None
        if parsed.messages[-1].role != "assistant":
            raise IdentityError(f"{where}: conversations[{i}] must end with the assistant's answer")
        conversations.append(
            tuple({"role": m["role"], "content": identity.fill(m["content"])} for m in messages)
        )
    return Identity(
        **fields, conversations=tuple(conversations),
        greetings=tuple(identity.fill(g) for g in greetings), source=source,
    )  # fmt: skip
