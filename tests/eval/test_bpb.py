"""Bits per byte: the hand computation, the special-token rule and tokenizer independence."""

from __future__ import annotations

import math

import pytest
import torch

from chatforge.tokenizer import Tokenizer
from tests.conftest import sample_texts
from trainer.eval.bpb import bits_per_byte, bpb_totals, text_batches

TEXT = "The cat sat on the mat. naïve café 東京 12345"


def test_bpb_equals_hand_computation(tiny_model, tiny_tokenizer):
    ids = tiny_tokenizer.encode(TEXT)
    batches = text_batches([ids], bos_id=tiny_tokenizer.bos_id, sequence_len=8, batch_rows=2)
    got = bits_per_byte(tiny_model, batches, tiny_tokenizer.token_bytes())
    # By hand, row by row as the batches cut the stream: -log2 p(next token), summed, over the
    # UTF-8 length of the text (the <|bos|> is an input only, never a target).
    stream = [tiny_tokenizer.bos_id, *ids]
    bits = 0.0
    with torch.no_grad():
        for start in range(0, len(stream) - 1, 8):
            chunk = stream[start : start + 9]
            logp = torch.log_softmax(tiny_model(torch.tensor([chunk[:-1]]))[0].double(), -1)
            bits -= sum(float(logp[t, chunk[t + 1]]) for t in range(len(chunk) - 1)) / math.log(2)
    assert got == pytest.approx(bits / len(TEXT.encode("utf-8")), rel=1e-6)


def test_special_tokens_count_no_bytes_and_no_loss(tiny_tokenizer):
    bos = tiny_tokenizer.bos_id
    table = torch.tensor(tiny_tokenizer.token_bytes(), dtype=torch.float64)
    a = tiny_tokenizer.encode("ab")
    targets = torch.tensor([[a[0], bos, -1]])
    losses = torch.tensor([[2.0, 100.0, 100.0]])
    nats, nbytes = bpb_totals(losses, targets, table)
    assert (nats, nbytes) == (2.0, float(len(tiny_tokenizer.id_to_bytes(a[0]))))


def test_same_number_whatever_the_tokenizer(tiny_tokenizer):
    """A model that spends exactly 8 bits on every byte scores 8.0 under any tokenizer."""
    other = Tokenizer.train(sample_texts(200, seed=1), vocab_size=300, name="other")
    results = []
    for tok in (tiny_tokenizer, other):
        ids = tok.encode(TEXT)
        table = torch.tensor(tok.token_bytes(), dtype=torch.float64)
        targets = torch.tensor([[tok.bos_id, *ids]])  # a special target: excluded by the rule
        losses = table[targets] * math.log(256) + (targets == tok.bos_id) * 3.0
        nats, nbytes = bpb_totals(losses, targets, table)
        results.append((len(ids), nats / (math.log(2) * nbytes)))
    assert results[0][0] != results[1][0]  # the tokenizers really split the text differently
    assert results[0][1] == results[1][1] == 8.0


def test_text_batches_score_every_token_once(tiny_tokenizer):
    docs = [tiny_tokenizer.encode(t) for t in ("one doc", "another longer document here")]
    batches = text_batches(docs, bos_id=tiny_tokenizer.bos_id, sequence_len=5, batch_rows=3)
    targets = torch.cat([y for _, y in batches]).flatten()
    counted = targets[targets != -1].tolist()
    assert counted == [*docs[0], tiny_tokenizer.bos_id, *docs[1]]
