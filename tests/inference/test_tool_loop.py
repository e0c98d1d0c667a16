"""The tool loop end to end through the engine, with a scripted model and injected ToolExecutors.

The scripted model is a real GPT whose blocks are the identity (nanochat's zero-initialised output
projections) and whose head maps each token of a script to the next: a bigram table written into
the weights. So the engine runs unchanged and the model "decides" to call the tool.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import torch
from inference_svc.config import EngineConfig
from inference_svc.engine import LLMEngine

from chatforge.contracts.sampling import SamplingParams
from chatforge.model import GPT, GPTConfig
from chatforge.tools import ToolLimits, ToolResult

CODE = "print(6*7)"


def scripted_model(vocab_size: int, chain: list[int]) -> GPT:
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(vocab_size=vocab_size, n_layer=1, n_embd=128, n_head=2, n_kv_head=1, sequence_len=128)
    )
    with torch.no_grad():
        emb = torch.nn.functional.rms_norm(model.wte.weight, (128,))  # what reaches the head, per token
        model.lm_head.weight.zero_()
        for cur, nxt in zip(chain, chain[1:], strict=False):
            model.lm_head.weight[nxt] += 10.0 * emb[cur] / 128  # logit ~10 for the scripted successor
    return model.eval()


class SubprocessExecutor:
    """Runs the snippet in a fresh interpreter (the test's stand-in for the sandbox service)."""

    def __init__(self, gate: threading.Event | None = None):
        self.gate = gate
        self.calls: list[str] = []

    def run(self, code: str, limits: ToolLimits | None = None) -> ToolResult:
        self.calls.append(code)
        if self.gate is not None:
            self.gate.wait(10)
        start = time.monotonic()
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=10)
        outcome = "ok" if done.returncode == 0 else "error"
        return ToolResult(outcome, done.stdout, done.stderr, done.returncode, time.monotonic() - start)


class TimeoutExecutor:
    def run(self, code: str, limits: ToolLimits | None = None) -> ToolResult:
        return ToolResult("timeout", duration_s=0.01, message="killed after 0.01s")


def setup(tok):
    sp = tok.special_id
    code, answer = tok.encode(CODE), tok.encode(" done")
    chain = [sp("<|assistant_start|>"), sp("<|python_start|>"), *code, sp("<|python_end|>")]
    chain2 = [sp("<|output_end|>"), *answer, sp("<|assistant_end|>")]
    assert len(set(chain + chain2)) == len(chain) + len(chain2), "script tokens must be distinct"
    model = scripted_model(tok.vocab_size, chain)
    with torch.no_grad():  # second half of the script: after the tool output, answer and end
        emb = torch.nn.functional.rms_norm(model.wte.weight, (128,))
        for cur, nxt in zip(chain2, chain2[1:], strict=False):
            model.lm_head.weight[nxt] += 10.0 * emb[cur] / 128
    prompt = [tok.bos_id, sp("<|user_start|>"), *tok.encode("what is six times seven"), sp("<|user_end|>")]
    prompt.append(sp("<|assistant_start|>"))
    params = SamplingParams(temperature=0.0, max_tokens=40, stop_token_ids=(sp("<|assistant_end|>"),))
    return model, prompt, params, answer


def drain(engine, ids, deadline_s=20.0):
    items = {i: [] for i in ids}
    end = time.monotonic() + deadline_s
    while engine.has_work() and time.monotonic() < end:
        for rid, new in engine.step().items():
            items.setdefault(rid, []).extend(new)
        time.sleep(0.001)
    return items


def test_python_block_runs_and_its_output_is_forced_into_the_sequence(tiny_tokenizer):
    tok = tiny_tokenizer
    model, prompt, params, answer = setup(tok)
    executor = SubprocessExecutor()
    engine = LLMEngine(model, EngineConfig(num_blocks=16), tokenizer=tok, tool_executor=executor)
    rid = engine.add_request(prompt, params)
    items = drain(engine, [rid])[rid]
    assert executor.calls == [CODE]
    events = [x.event for x in items if x.event]
    assert [e.kind for e in events] == ["tool_call", "tool_result", "finish"]
    assert events[0].code == CODE
    assert events[1].outcome == "ok" and events[1].output == "42\n"
    assert events[1].duration_s > 0
    sp = tok.special_id
    forced = [sp("<|output_start|>"), *tok.encode("42\n"), sp("<|output_end|>")]
    out_ids = [x.token_id for x in items if x.token_id is not None]
    code_ids = tok.encode(CODE)
    want = [
        sp("<|python_start|>"),
        *code_ids,
        sp("<|python_end|>"),
        *forced,
        *answer,
        sp("<|assistant_end|>"),
    ]
    assert out_ids == want
    # The visible text is the answer only: code and tool output travel in events.
    assert "".join(x.text for x in items) == " done"
    assert events[2].usage.completion_tokens == len(want)
    assert engine.pool.num_free_blocks == engine.pool.num_blocks


def test_other_sequences_keep_decoding_while_one_waits_for_its_tool(tiny_tokenizer, tiny_model):
    tok = tiny_tokenizer
    model, prompt, params, _ = setup(tok)
    gate = threading.Event()
    engine = LLMEngine(
        model, EngineConfig(num_blocks=32), tokenizer=tok, tool_executor=SubprocessExecutor(gate)
    )
    tool_rid = engine.add_request(prompt, params)
    other = engine.add_request([5, 6, 7], SamplingParams(temperature=0.0, max_tokens=25, tools=False))
    items = {tool_rid: [], other: []}
    for _ in range(200):  # until the other request finishes, the tool is held at the gate
        for rid, new in engine.step().items():
            items[rid].extend(new)
        if items[other] and items[other][-1].is_last:
            break
    assert items[other][-1].event.finish_reason == "length"
    tool_request = engine.scheduler.requests[tool_rid]
    assert tool_request.pending_tool and engine.kv.block_ids(tool_rid)  # parked with its blocks
    gate.set()
    items[tool_rid].extend(drain(engine, [tool_rid])[tool_rid])
    assert items[tool_rid][-1].event.finish_reason == "stop"


def test_tool_timeout_is_reported_and_fed_back(tiny_tokenizer):
    tok = tiny_tokenizer
    model, prompt, params, _ = setup(tok)
    engine = LLMEngine(model, EngineConfig(num_blocks=16), tokenizer=tok, tool_executor=TimeoutExecutor())
    rid = engine.add_request(prompt, params)
    items = drain(engine, [rid])[rid]
    result = next(x.event for x in items if x.event and x.event.kind == "tool_result")
    assert result.outcome == "timeout" and "killed after" in result.output
    out_ids = [x.token_id for x in items if x.token_id is not None]
    assert tok.encode("[timeout] killed after 0.01s")[0] in out_ids
    assert engine.pool.num_free_blocks == engine.pool.num_blocks


def test_abort_while_the_tool_runs_frees_the_blocks_and_drops_the_result(tiny_tokenizer):
    tok = tiny_tokenizer
    model, prompt, params, _ = setup(tok)
    gate = threading.Event()
    engine = LLMEngine(
        model, EngineConfig(num_blocks=16), tokenizer=tok, tool_executor=SubprocessExecutor(gate)
    )
    rid = engine.add_request(prompt, params)
    for _ in range(100):
        engine.step()
        if engine.scheduler.requests[rid].pending_tool:
            break
    assert engine.kv.block_ids(rid)
    engine.abort(rid)
    engine.step()
    assert engine.pool.num_free_blocks == engine.pool.num_blocks and engine.tools.num_running == 0
    gate.set()
    assert engine.step() == {} and not engine.has_work()
