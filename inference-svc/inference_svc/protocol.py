"""A generate request (`chatforge.contracts.generate.GenerateRequest`) made ready for the engine.

Raw prompt ids go as they are; a chat is rendered primed for the assistant and stops where a reply
ends (`chatforge.chat.reply_stop_ids`), as the model was trained to.
"""

from __future__ import annotations

from chatforge.chat import ConversationError, render_for_completion, reply_stop_ids
from chatforge.contracts.errors import ServiceError
from chatforge.contracts.generate import GenerateRequest
from chatforge.contracts.sampling import SamplingParams
from chatforge.tokenizer import Tokenizer


def prepare(request: GenerateRequest, tokenizer: Tokenizer | None) -> tuple[list[int], SamplingParams]:
    """Prompt ids and sampling for the engine; ServiceError (invalid request) when it cannot be served."""
    sampling = request.sampling
    if request.messages is None:
        assert request.prompt_ids is not None  # GenerateRequest holds exactly one of the two
        return list(request.prompt_ids), sampling
    if tokenizer is None:
        raise ServiceError.invalid(
            "this model has no tokenizer: send 'prompt_ids' instead of 'messages'", param="messages"
        )
    try:
        prompt = render_for_completion(tokenizer, {"messages": request.messages})
    except ConversationError as e:
        raise ServiceError.invalid(str(e), param="messages") from None
    return prompt, sampling.with_(stop_token_ids=(*sampling.stop_token_ids, *reply_stop_ids(tokenizer)))
