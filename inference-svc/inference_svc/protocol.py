"""The generation request as it arrives over HTTP or a Serve handle, parsed once at the edge.

    {"prompt_ids": [1, 2, 3]}                       raw ids, or
    {"messages": [{"role": "user", "content": "hi"}]} a chat, rendered primed for the assistant
    plus optional "max_tokens", "temperature", "top_k", "top_p", "seed", "stop", "stop_token_ids",
    "tools" (run python blocks; default true).

A chat stops at `<|assistant_end|>` (and at a stray `<|bos|>`), as the model was trained to.
"""

from __future__ import annotations

from typing import Any

from chatforge.chat import ConversationError, render_for_completion
from chatforge.tokenizer import Tokenizer
from inference_svc.sampling import SamplingError, SamplingParams

_SAMPLING_FIELDS = ("max_tokens", "temperature", "top_k", "top_p", "seed", "stop", "stop_token_ids", "tools")


class BadRequest(ValueError):
    """The request cannot be served as written; the message says which field and why (HTTP 400)."""


def parse_request(body: Any, tokenizer: Tokenizer | None) -> tuple[list[int], SamplingParams]:
    if not isinstance(body, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(body).__name__}")
    unknown = set(body) - {"prompt_ids", "messages", *_SAMPLING_FIELDS}
    if unknown:
        raise BadRequest(f"unknown fields {sorted(unknown)}")
    if ("prompt_ids" in body) == ("messages" in body):
        raise BadRequest("give exactly one of 'prompt_ids' or 'messages'")
    fields = {k: body[k] for k in _SAMPLING_FIELDS if k in body}
    for key in ("stop", "stop_token_ids"):
        if key in fields:
            if isinstance(fields[key], str) or not isinstance(fields[key], list):
                raise BadRequest(f"'{key}' must be a list")
            fields[key] = tuple(fields[key])
    if "messages" in body:
        if tokenizer is None:
            raise BadRequest("this model has no tokenizer: send 'prompt_ids' instead of 'messages'")
        try:
            prompt = render_for_completion(tokenizer, {"messages": body["messages"]})
        except ConversationError as e:
            raise BadRequest(str(e)) from None
        ends = (tokenizer.special_id("<|assistant_end|>"), tokenizer.bos_id)
        fields["stop_token_ids"] = tuple(fields.get("stop_token_ids", ())) + ends
    else:
        prompt = body["prompt_ids"]
        if not isinstance(prompt, list) or not all(
            isinstance(t, int) and not isinstance(t, bool) for t in prompt
        ):
            raise BadRequest("'prompt_ids' must be a list of integers")
    try:
        return prompt, SamplingParams(**fields)
    except (SamplingError, TypeError) as e:
        raise BadRequest(str(e)) from None
