"""Offline conversation data in the real datasets' own schemas (no SmolTalk-like data ships).

Each `*_row(rng)` returns one row shaped exactly like a row of the dataset it stands in for, so the
same converters (`smoltalk_conversation`, `mmlu_conversation`, `gsm8k_conversation`) read real and
generated data alike. Every answer is computed or read from `lexicon`'s hand-checked tables, so it
is right by construction. None of this touches an evaluation test split.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from ..identity import Identity, default_identity
from .lexicon import CAPITALS, ITEMS, NAMES, THINGS, UNITS, WORDS

# The generated instructions' system prompts; the mixture adds the identity's ("You are <name>.").
SYSTEM_PROMPTS = ("You are a helpful assistant.", "Answer briefly and accurately.")


# --- SmolTalk schema: {"messages": [{"role", "content"}, ...]} -----------------------------------


def identity_row(rng: random.Random, identity: Identity | None = None) -> dict[str, Any]:
    """Teaches the model its own name and nature (nanochat's identity conversations), from the
    identity file (`trainer.identity`; the default one when none is given)."""
    return (identity or default_identity()).row(rng)


def instruction_row(rng: random.Random, system_prompts: Sequence[str] = SYSTEM_PROMPTS) -> dict[str, Any]:
    """Short instructions with checkable answers: capitals, spelling, counting, unit conversion."""
    kind = rng.randrange(5)
    if kind == 0:
        country, capital = rng.choice(CAPITALS)
        pair = [f"What is the capital of {country}?", f"The capital of {country} is {capital}."]
    elif kind == 1:
        w = rng.choice(WORDS)
        pair = [f"Spell the word '{w}' letter by letter.", "-".join(w)]
    elif kind == 2:
        w = rng.choice(WORDS)
        c = rng.choice(w)
        n = w.count(c)
        pair = [
            f"How many times does the letter '{c}' appear in '{w}'?",
            f"The letter '{c}' appears {n} time{'s' * (n != 1)} in '{w}'.",
        ]
    elif kind == 3:
        w = rng.choice(WORDS)
        pair = [f"Write the word '{w}' backwards.", w[::-1]]
    else:
        big, small, k = rng.choice(UNITS)
        n = rng.randint(2, 12)
        pair = [
            f"How many {_plural(small)} are in {n} {_plural(big)}?",
            f"There are {n * k} {_plural(small)} in {n} {_plural(big)}.",
        ]
    row = _chat(pair)
    if rng.random() < 0.2:
        row["messages"].insert(0, {"role": "system", "content": rng.choice(system_prompts)})
    return row


# --- MMLU schema: {"question", "choices", "answer" (index), "subject"} -----------------------------


def mmlu_row(rng: random.Random) -> dict[str, Any]:
    """A four-way multiple-choice question about capitals, units or words."""
    kind = rng.randrange(3)
    if kind == 0:
        country, capital = rng.choice(CAPITALS)
        wrong = rng.sample([c for _, c in CAPITALS if c != capital], 3)
        question, right, subject = f"What is the capital of {country}?", capital, "geography"
    elif kind == 1:
        big, small, k = rng.choice(UNITS)
        question, right, subject = f"How many {_plural(small)} are in one {big}?", str(k), "units"
        wrong = [str(x) for x in rng.sample(sorted({k * 10, k // 2 or 3, k + 1, k * 2, 100, 1000} - {k}), 3)]
    else:
        w = rng.choice([w for w in WORDS if len(w) > 3])
        question, right, subject = f"How many letters are in the word '{w}'?", str(len(w)), "spelling"
        wrong = [str(x) for x in rng.sample([n for n in range(2, 15) if n != len(w)], 3)]
    choices = [right, *wrong]
    rng.shuffle(choices)
    return {"question": question, "choices": choices, "answer": choices.index(right), "subject": subject}


# --- GSM8K schema: {"question", "answer" with <<expr=result>> and "#### n"} --------------------------


def gsm8k_row(rng: random.Random) -> dict[str, Any]:
    """A two-step word problem whose arithmetic is annotated for the calculator tool."""
    name = rng.choice(NAMES)
    if rng.random() < 0.5:
        item, items, lo, hi = rng.choice(ITEMS)
        n, price, paid = rng.randint(2, 9), rng.randint(lo, hi), 0
        cost = n * price
        paid = (cost // 10 + 1) * 10 if cost % 10 else cost + 10
        question = f"{name} buys {n} {items} at ${price} each and pays with ${paid}. How much change does {name} get?"
        answer = (
            f"The {items} cost {n}*{price} = <<{n}*{price}={cost}>>{cost} dollars.\n"
            f"The change is {paid}-{cost} = <<{paid}-{cost}={paid - cost}>>{paid - cost} dollars.\n"
            f"#### {paid - cost}"
        )
    else:
        thing, things = rng.choice(THINGS)
        friends, each, extra = rng.randint(2, 6), rng.randint(2, 9), rng.randint(1, 20)
        total = friends * each + extra
        question = (
            f"{name} has {total} {things}. {name} keeps {extra} and shares the rest equally among "
            f"{friends} friends. How many {things} does each friend get?"
        )
        answer = (
            f"{name} shares {total}-{extra} = <<{total}-{extra}={total - extra}>>{total - extra} {things}.\n"
            f"Each friend gets {total - extra}/{friends} = <<{total - extra}/{friends}={each}>>{each} {things}.\n"
            f"#### {each}"
        )
    return {"question": question, "answer": answer}


def _chat(*pairs: list[str]) -> dict[str, Any]:
    messages = []
    for user, assistant in pairs:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return {"messages": messages}


def _plural(unit: str) -> str:
    irregular = {"foot": "feet", "inch": "inches", "day": "days", "dozen": "dozens"}
    return irregular.get(unit, unit + "s")
