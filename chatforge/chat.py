"""The chat format: one typed conversation schema and the one renderer every stage uses.

A conversation is `<|bos|>` followed by alternating user and assistant turns:

    <|bos|> <|user_start|> text <|user_end|> <|assistant_start|> parts... <|assistant_end|> ...

An assistant turn is a sequence of parts: plain text, a python tool call
(`<|python_start|> code <|python_end|>`) and the tool's output (`<|output_start|> out <|output_end|>`).
A system message has no tokens of its own: it is merged into the first user turn, as nanochat does,
because a small model gains nothing from a separate role it rarely sees.

The loss mask says which tokens the model is trained to produce: assistant text, python calls and
`<|assistant_end|>`. User text and tool output are never supervised: the model did not write them.
SFT, RL, evaluation, the tokenizer service and the gateway all call `render_conversation` or
`render_for_completion`; there is no second copy of this template anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from chatforge.contracts.errors import ErrorDetail, ServiceError

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "user", "assistant")


class ConversationError(ValueError):
    """A conversation that cannot be rendered; the message names the offending message and field."""


class ConversationTooLong(ConversationError):
    """The rendered conversation exceeds the context and truncation was not asked for."""

    def __init__(self, n_tokens: int, max_tokens: int):
        super().__init__(f"conversation renders to {n_tokens} tokens, over the limit of {max_tokens}")
        self.n_tokens = n_tokens
        self.max_tokens = max_tokens

    @property
    def detail(self) -> ErrorDetail:
        """As it crosses a service boundary: the numbers as fields (`chatforge.contracts.errors`)."""
        return ServiceError.context_length(self.n_tokens, self.max_tokens, why=str(self)).detail

    @classmethod
    def from_detail(cls, detail: ErrorDetail) -> ConversationTooLong:
        return cls(detail.prompt_tokens or 0, detail.context_length or 0)


@dataclass(frozen=True)
class TextPart:
    text: str
    kind: Literal["text"] = field(default="text", init=False)


@dataclass(frozen=True)
class PythonCall:
    """Code the assistant asks the sandbox to run."""

    code: str
    kind: Literal["python"] = field(default="python", init=False)


@dataclass(frozen=True)
class PythonOutput:
    """What the sandbox printed; written by the tool, never by the model."""

    output: str
    kind: Literal["python_output"] = field(default="python_output", init=False)


Part = TextPart | PythonCall | PythonOutput


@dataclass(frozen=True)
class Message:
    role: Role
    parts: tuple[Part, ...]

    @property
    def text(self) -> str:
        """The message's plain text parts joined (tool parts left out)."""
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    def to_dict(self) -> dict[str, Any]:
        if len(self.parts) == 1 and isinstance(self.parts[0], TextPart):
            return {"role": self.role, "content": self.parts[0].text}
        return {"role": self.role, "content": [_part_to_dict(p) for p in self.parts]}


@dataclass(frozen=True)
class Conversation:
    messages: tuple[Message, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"messages": [m.to_dict() for m in self.messages]}

    def __len__(self) -> int:
        return len(self.messages)


class TokenizerLike(Protocol):
    """What rendering needs of a tokenizer (`chatforge.tokenizer.Tokenizer` satisfies it)."""

    @property
    def bos_id(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def special_id(self, token: str) -> int: ...


@dataclass
class RenderedConversation:
    ids: list[int]
    mask: list[int]  # mask[i] == 1 when ids[i] is a token the model is trained to produce
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.ids)


# ---------------------------------------------------------------------------------------------
# Parsing and validation


def message(role: Role, content: str | Sequence[Part]) -> Message:
    """Build one message from a string or a list of parts (convenience for code and tests)."""
    parts = (TextPart(content),) if isinstance(content, str) else tuple(content)
    return Message(role, parts)


def parse_conversation(data: Any) -> Conversation:
    """Validate and build a Conversation from JSON-like data.

    Accepts `{"messages": [...]}`, a list of message dicts, or a Conversation. Each message is
    `{"role": "system"|"user"|"assistant", "content": str | [part, ...]}` where a part is
    `{"type": "text", "text": ...}`, `{"type": "python", "text": ...}` or
    `{"type": "python_output", "text": ...}`. Raises ConversationError naming the problem.
    """
    if isinstance(data, Conversation):
        validate(data)
        return data
    if isinstance(data, Mapping):
        if "messages" not in data:
            raise ConversationError("conversation object has no 'messages' field")
        data = data["messages"]
    if isinstance(data, str | bytes) or not isinstance(data, Sequence):
        raise ConversationError(f"messages must be a list, got {type(data).__name__}")
    messages = tuple(_parse_message(i, m) for i, m in enumerate(data))
    conversation = Conversation(messages)
    validate(conversation)
    return conversation


def validate(conversation: Conversation) -> None:
    """Check roles and their order: optional system first, then user/assistant alternating from user."""
    messages = conversation.messages
    if not messages:
        raise ConversationError("conversation is empty: it needs at least one user message")
    start = 0
    if messages[0].role == "system":
        start = 1
        if len(messages) == 1:
            raise ConversationError("conversation has a system message but no user message")
    for i, m in enumerate(messages):
        if m.role not in ROLES:
            raise ConversationError(
                f"messages[{i}]: unknown role {m.role!r} (expected one of {', '.join(ROLES)})"
            )
        if i < start:
            continue
        if m.role == "system":
            raise ConversationError(f"messages[{i}]: a system message is only allowed first")
        expected = "user" if (i - start) % 2 == 0 else "assistant"
        if m.role != expected:
            raise ConversationError(
                f"messages[{i}]: expected role {expected!r} but got {m.role!r} "
                "(turns must alternate user, assistant, user, ...)"
            )
        if m.role != "assistant" and any(not isinstance(p, TextPart) for p in m.parts):
            raise ConversationError(f"messages[{i}]: only assistant messages may hold python parts")
        for j, p in enumerate(m.parts):
            value = p.text if isinstance(p, TextPart) else p.code if isinstance(p, PythonCall) else p.output
            if not isinstance(value, str):
                raise ConversationError(f"messages[{i}].content[{j}]: text must be a string")


def _parse_message(i: int, m: Any) -> Message:
    if isinstance(m, Message):
        return m
    if not isinstance(m, Mapping):
        raise ConversationError(f"messages[{i}]: must be an object with 'role' and 'content'")
    role = m.get("role")
    if role not in ROLES:
        raise ConversationError(f"messages[{i}]: unknown role {role!r} (expected one of {', '.join(ROLES)})")
    if "content" not in m:
        raise ConversationError(f"messages[{i}]: missing 'content'")
    content = m["content"]
    if isinstance(content, str):
        return Message(role, (TextPart(content),))
    if isinstance(content, bytes) or not isinstance(content, Sequence):
        raise ConversationError(
            f"messages[{i}]: content must be a string or a list of parts, got {type(content).__name__}"
        )
    return Message(role, tuple(_parse_part(i, j, p) for j, p in enumerate(content)))


def _parse_part(i: int, j: int, p: Any) -> Part:
    where = f"messages[{i}].content[{j}]"
    if not isinstance(p, Mapping):
        raise ConversationError(f"{where}: a part must be an object with 'type' and 'text'")
    kind = p.get("type", "text")
    text = p.get("text")
    if not isinstance(text, str):
        raise ConversationError(f"{where}: 'text' must be a string, got {type(text).__name__}")
    if kind == "text":
        return TextPart(text)
    if kind == "python":
        return PythonCall(text)
    if kind == "python_output":
        return PythonOutput(text)
    raise ConversationError(f"{where}: unknown part type {kind!r} (expected text, python or python_output)")


def _part_to_dict(p: Part) -> dict[str, str]:
    if isinstance(p, TextPart):
        return {"type": "text", "text": p.text}
    if isinstance(p, PythonCall):
        return {"type": "python", "text": p.code}
    return {"type": "python_output", "text": p.output}


# ---------------------------------------------------------------------------------------------
# Rendering


def render_conversation(
    tokenizer: TokenizerLike,
    conversation: Conversation | Any,
    *,
    max_tokens: int | None = None,
    truncate: bool = False,
) -> RenderedConversation:
    """Render a conversation to token ids and the loss mask.

    With `max_tokens`, a longer rendering raises ConversationTooLong unless `truncate=True`,
    in which case it is cut to `max_tokens` and `truncated` is set: never silently.
    """
    conversation = parse_conversation(conversation)
    ids: list[int] = []
    mask: list[int] = []
    sp = _Specials(tokenizer)

    def add(tokens: list[int], supervised: bool) -> None:
        ids.extend(tokens)
        mask.extend([int(supervised)] * len(tokens))

    add([tokenizer.bos_id], False)
    for m in _merge_system(conversation.messages):
        if m.role == "user":
            add([sp.user_start, *tokenizer.encode(m.text), sp.user_end], False)
            continue
        add([sp.assistant_start], False)
        for p in m.parts:
            if isinstance(p, TextPart):
                add(tokenizer.encode(p.text), True)
            elif isinstance(p, PythonCall):
                add([sp.python_start, *tokenizer.encode(p.code), sp.python_end], True)
            else:
                add([sp.output_start, *tokenizer.encode(p.output), sp.output_end], False)
        add([sp.assistant_end], True)

    truncated = False
    if max_tokens is not None and len(ids) > max_tokens:
        if not truncate:
            raise ConversationTooLong(len(ids), max_tokens)
        ids, mask, truncated = ids[:max_tokens], mask[:max_tokens], True
    return RenderedConversation(ids, mask, truncated)


def render_for_completion(
    tokenizer: TokenizerLike, conversation: Conversation | Any, *, max_tokens: int | None = None
) -> list[int]:
    """Render a conversation that ends with a user turn, primed for the assistant's reply.

    Returns ids ending in `<|assistant_start|>`. A conversation that ends with an assistant turn is
    rejected: the caller decides whether to drop it (evaluation) or continue it.
    """
    conversation = parse_conversation(conversation)
    if conversation.messages[-1].role != "user":
        raise ConversationError(
            f"a conversation to complete must end with a user message, not {conversation.messages[-1].role!r}"
        )
    rendered = render_conversation(tokenizer, conversation)
    ids = rendered.ids + [tokenizer.special_id("<|assistant_start|>")]
    if max_tokens is not None and len(ids) > max_tokens:
        raise ConversationTooLong(len(ids), max_tokens)
    return ids


# Where a reply to `render_for_completion`'s prompt ends: `<|assistant_end|>`, as the model was
# trained, or a stray `<|bos|>` (a model that starts a new document has left the chat).
REPLY_ENDS: tuple[str, str] = ("<|assistant_end|>", "<|bos|>")


def reply_stop_ids(tokenizer: TokenizerLike) -> tuple[int, ...]:
    """The ids of `REPLY_ENDS` in `tokenizer`."""
    return tuple(tokenizer.special_id(token) for token in REPLY_ENDS)


def _merge_system(messages: Sequence[Message]) -> list[Message]:
    if messages[0].role != "system":
        return list(messages)
    system, first_user, *rest = messages
    merged = Message("user", (TextPart(system.text + "\n\n" + first_user.text),))
    return [merged, *rest]


class _Specials:
    """Special token ids looked up once per render."""

    def __init__(self, tokenizer: TokenizerLike):
        get = tokenizer.special_id
        self.user_start = get("<|user_start|>")
        self.user_end = get("<|user_end|>")
        self.assistant_start = get("<|assistant_start|>")
        self.assistant_end = get("<|assistant_end|>")
        self.python_start = get("<|python_start|>")
        self.python_end = get("<|python_end|>")
        self.output_start = get("<|output_start|>")
        self.output_end = get("<|output_end|>")
