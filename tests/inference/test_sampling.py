"""Sampling rules on hand-made logits, stop strings on hand-made text, request parsing at the edge."""

from __future__ import annotations

import pytest
import torch
from inference_svc.protocol import prepare
from inference_svc.sampling import SamplingError, StopStrings, check_stop, make_generator, sample
from pydantic import ValidationError

from chatforge.contracts.errors import ErrorKind, ServiceError
from chatforge.contracts.generate import GenerateRequest
from chatforge.contracts.sampling import SamplingParams


def draws(logits, params, n=300):
    generator = make_generator(params, torch.device("cpu"))
    return {sample(logits.view(1, -1), [params], [generator])[0] for _ in range(n)}


def test_greedy_is_argmax_and_needs_no_generator():
    params = SamplingParams(temperature=0.0)
    assert make_generator(params, torch.device("cpu")) is None
    assert sample(torch.tensor([[0.1, 3.0, 2.9], [5.0, 0.0, 0.0]]), [params] * 2, [None, None]) == [1, 0]


def test_a_row_that_cannot_be_sampled_is_that_rows_error_only():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    logits[1] = float("nan")
    logits[2, :2] = float("inf")  # two infinities: softmax gives NaN and torch.multinomial refuses
    greedy, hot = SamplingParams(temperature=0.0), SamplingParams(temperature=1.0, seed=3)
    params = [hot, greedy, hot, hot]
    gens = [make_generator(p, torch.device("cpu")) for p in params]
    out = sample(logits, params, gens)
    assert isinstance(out[1], SamplingError) and "NaN" in str(out[1])  # argmax alone would not notice
    assert isinstance(out[2], SamplingError) and "sampling failed" in str(out[2])
    # the good rows drew what they draw without the bad ones beside them
    assert out[0] == sample(logits[:1], [hot], [make_generator(hot, torch.device("cpu"))])[0]
    assert out[3] == sample(logits[3:], [hot], [make_generator(hot, torch.device("cpu"))])[0]


def test_top_k_and_top_p_cut_the_tail():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    assert draws(logits, SamplingParams(temperature=1.0, top_k=2, seed=0)) == {0, 1}
    # top_p 0.7: 0.5 alone is short of it, 0.5 + 0.3 reaches it; 0.15 and 0.05 are never drawn.
    assert draws(logits, SamplingParams(temperature=1.0, top_p=0.7, seed=0)) == {0, 1}
    assert draws(logits, SamplingParams(temperature=1.0, top_p=0.01, seed=0)) == {0}
    # A top_p below float32's range (found by the gateway's fuzz test) still keeps the likeliest token.
    wide = torch.randn(512, generator=torch.Generator().manual_seed(0)) * 3
    assert draws(wide, SamplingParams(temperature=1.0, top_p=3e-80, seed=0), n=20) == {int(wide.argmax())}
    assert draws(logits, SamplingParams(temperature=1.0, seed=0)) == {0, 1, 2, 3}


def test_same_seed_same_draws():
    logits = torch.randn(1, 50)
    a, b, c = (SamplingParams(temperature=1.0, seed=s) for s in (7, 7, 8))

    def run(p):
        generator = make_generator(p, torch.device("cpu"))
        return [sample(logits, [p], [generator])[0] for _ in range(20)]

    assert run(a) == run(b) != run(c)


def test_stop_rules():
    p = SamplingParams(temperature=0.0, max_tokens=3, stop_token_ids=(9,))
    assert check_stop(9, 1, 10, p, 100) == "stop"
    assert check_stop(1, 3, 10, p, 100) == "length"
    assert check_stop(1, 1, 100, p, 100) == "length"  # the model's context is full
    assert check_stop(1, 1, 10, p, 100) is None


def test_invalid_parameters_name_the_field():
    with pytest.raises(ValidationError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(ValidationError, match="top_p"):
        SamplingParams(temperature=0.0, top_p=0)
    with pytest.raises(ValidationError, match="max_tokens"):
        SamplingParams(temperature=0.0, max_tokens=0)


def test_stop_strings_hold_back_a_possible_start_and_cut_at_the_match():
    s = StopStrings(("END",))
    assert s.feed("hello E") == ("hello ", False)  # "E" may start "END": held back
    assert s.feed("x") == ("Ex", False)  # it did not
    assert s.feed(" ok EN") == (" ok ", False)
    assert s.feed("D and more") == ("", True)
    assert StopStrings(()).feed("anything") == ("anything", False)
    t = StopStrings(("ab", "b"))
    assert t.feed("xab") == ("x", True)  # the earliest match wins


def parse(body, tokenizer):
    return prepare(GenerateRequest.model_validate(body), tokenizer)


def test_requests_are_parsed_once_at_the_edge(tiny_tokenizer):
    ids, params = parse({"prompt_ids": [1, 2], "sampling": {"max_tokens": 5, "stop": ["\n"]}}, None)
    assert ids == [1, 2] and params.max_tokens == 5 and params.stop == ("\n",)
    ids, params = parse({"messages": [{"role": "user", "content": "hi"}]}, tiny_tokenizer)
    assert ids[-1] == tiny_tokenizer.special_id("<|assistant_start|>")
    assert tiny_tokenizer.special_id("<|assistant_end|>") in params.stop_token_ids
    assert params.temperature == SamplingParams().temperature  # omitted: the contract's default
    for body, message in (
        ([1, 2], "valid dictionary"),
        ({"prompt_ids": [1], "messages": [{"role": "user", "content": "x"}]}, "exactly one"),
        ({"prompt_ids": "abc"}, "prompt_ids"),
        ({"prompt_ids": [1], "temprature": 1}, "temprature"),
        ({"prompt_ids": [1], "sampling": {"temprature": 1}}, "temprature"),
        ({"prompt_ids": [1], "sampling": {"stop": "x"}}, "stop"),
        ({"prompt_ids": [1], "sampling": {"top_p": 2}}, "top_p"),
        ({"prompt_ids": [1], "sampling": {"max_tokens": "5"}}, "max_tokens"),
    ):
        with pytest.raises(ValidationError, match=message):
            parse(body, tiny_tokenizer)
    with pytest.raises(ServiceError, match="expected role 'user'") as refused:
        parse({"messages": [{"role": "assistant", "content": "hi"}]}, tiny_tokenizer)
    assert refused.value.kind is ErrorKind.INVALID_REQUEST and refused.value.detail.param == "messages"
    with pytest.raises(ServiceError, match="no tokenizer"):
        parse({"messages": [{"role": "user", "content": "hi"}]}, None)
