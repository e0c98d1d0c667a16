"""Fixtures for the evaluation tests: a tiny random GPT over the session's tiny tokenizer."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def tiny_model(tiny_tokenizer):
    """A depth-1 GPT (64 wide) with random weights: enough to exercise every scoring path."""
    import torch

    from chatforge.model import GPT, GPTConfig

    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=tiny_tokenizer.vocab_size, n_layer=1, n_embd=64, n_head=2, n_kv_head=2, sequence_len=256
    )
    model = GPT(config)
    # Non-zero output projections and head: a freshly initialised GPT predicts near-uniformly.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model.eval()


@pytest.fixture(scope="session")
def script_tokenizer():
    """A tokenizer in which `####` and `42` are single tokens, so a bigram script can write them."""
    from chatforge.tokenizer import Tokenizer
    from tests.conftest import sample_texts

    # 320 ids, the fewest a tokenizer allows plus a few merges: the bigram model is as wide as the vocabulary
    return Tokenizer.train(
        sample_texts(100) + ["The answer is\n#### 42"] * 300, vocab_size=320, name="script"
    )


def bigram_model(tokenizer, transitions):
    """A GPT whose next token depends only on the current one: `transitions[a]` lists the tokens that
    may follow `a` (equally likely; one entry means greedy and sampling both pick it).

    Blocks start as the identity (zero output projections), so with one-hot embeddings the head
    reads the current token alone (the embedding is normalised to sqrt(width) ~ 18 per one-hot
    entry). A head weight of 1 gives a logit the softcap turns into 12.4 against 0 for every other
    token: p > 0.999. A branch of two gets 0.5 each (logits 8.0, ~5% left for the rest), where the
    softcap is still steep enough for training to move them. The embedding is scaled by 1000 so
    that optimizer steps of ~0.2 per entry (AdamW) barely turn its direction.
    """
    import torch

    from chatforge.model import GPT, GPTConfig

    vocab = tokenizer.vocab_size
    width = (vocab + 63) // 64 * 64
    config = GPTConfig(
        vocab_size=vocab, n_layer=1, n_embd=width, n_head=width // 64, n_kv_head=width // 64, sequence_len=256
    )
    model = GPT(config)
    with torch.no_grad():
        model.wte.weight.zero_()
        model.wte.weight[:vocab, :vocab] = 1000 * torch.eye(vocab)
        model.lm_head.weight.zero_()
        for a, nexts in transitions.items():
            for b in nexts:
                model.lm_head.weight[b, a] = 1.0 if len(nexts) == 1 else 0.5
    return model.eval()


def tool_script(tokenizer, answers=("42",)):
    """Transitions for: <|python_start|>print(6*7)<|python_end|> (the tool prints 42), then
    `#### <answer>` and <|assistant_end|>; several answers make the last step a coin flip."""
    sp = tokenizer.special_id
    code = tokenizer.encode("print(6*7)")
    chain = [sp("<|assistant_start|>"), sp("<|python_start|>"), *code, sp("<|python_end|>")]
    transitions = {a: [b] for a, b in zip(chain, chain[1:], strict=False)}
    hashes, space = tokenizer.encode("####"), tokenizer.encode(" ")
    assert len(hashes) == 1 and len(space) == 1
    transitions[sp("<|output_end|>")] = hashes
    transitions[hashes[0]] = space
    transitions[space[0]] = []
    for answer in answers:
        ids = tokenizer.encode(answer)
        transitions[space[0]].append(ids[0])
        for a, b in zip(ids, [*ids[1:], sp("<|assistant_end|>")], strict=True):
            transitions.setdefault(a, []).append(b)
    # A token may have one role only in the script, or the bigram would loop.
    assert len(set(chain)) == len(chain) and not set(chain) & {hashes[0], space[0]}
    return transitions


class LocalPython:
    """A ToolExecutor for tests that need tool output but not isolation: `python3 -I` in a subprocess."""

    def run(self, code, limits=None):
        import subprocess
        import sys

        from chatforge.tools import ToolLimits, ToolResult

        limits = limits or ToolLimits()
        try:
            done = subprocess.run(
                [sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=limits.timeout_s
            )
        except subprocess.TimeoutExpired:
            return ToolResult("timeout", message=f"over {limits.timeout_s}s")
        outcome = "ok" if done.returncode == 0 else "error"
        return ToolResult(outcome, done.stdout, done.stderr, done.returncode)
