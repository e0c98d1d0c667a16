"""`chatforge export hf` / `chatforge import hf`: the exported directory loads in `transformers` and
computes what chatforge computes.

A small GPT with random weights (scaled up, so that logits are far apart and greedy choices are not
decided by rounding) is saved as the trainer saves it, exported, and loaded with
`AutoModelForCausalLM` / `AutoTokenizer` (`trust_remote_code=True`, offline: tests/conftest.py).
chatforge itself is the oracle: `GPT.forward` for logits, `GPT.generate` (full recompute, no cache)
for greedy tokens, `Tokenizer` for ids, `chatforge.chat` for the chat template. One configuration per
architecture option (grouped-query attention, sliding windows, value embeddings) and all together.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from chatforge import checkpoint
from chatforge.artifacts import ArtifactStore
from chatforge.chat import render_conversation, render_for_completion, reply_stop_ids
from chatforge.cli import main
from chatforge.contracts.sampling import DEFAULT_MAX_TOKENS, DEFAULT_TEMPERATURE, DEFAULT_TOP_K
from chatforge.contracts.tokens import SPECIAL_TOKENS
from chatforge.export import hf
from chatforge.export.hf import EXPORTED_FIELDS, REMOTE_CODE_FILES, export_hf, import_hf
from chatforge.loading import load_model
from chatforge.model import GPT, GPTConfig
from chatforge.tokenizer import Tokenizer

BASE = dict(n_layer=3, n_embd=64, n_head=4, n_kv_head=4, sequence_len=96)
CONFIGS = {
    "mha": {},
    "gqa": {"n_kv_head": 2},
    "mqa": {"n_kv_head": 1},
    # sliding windows: layer 0 sees 8 positions; prompts and generations below run far past that
    "window": {"window_pattern": "SL", "short_window": 8},
    "value-embeds": {"value_embeds": True},  # layers 0 and 2
    "all-options": {"n_kv_head": 2, "window_pattern": "SSL", "short_window": 6, "value_embeds": True},
}
PROMPT = "The model learns to predict the next token: 12345 + 678, naïve café, 東京 😀"

TEXTS = [
    "",
    "hello",
    "Hello world, the model learns to predict the next token.",
    "  leading spaces and trailing  \n\n\ttabs\r\nwindows lines",
    "digits 0 1 12 123 1234 12345678901234567890 3.14159 -42 1e10",
    "unicode: naïve café über Straße 東京は日本の首都です。你好，世界 Привет мир",
    "emoji 😀 🚀 ✨ 👩‍👩‍👧 and combining e\u0301",
    "def f(x):\n    return x ** 2  # square\n\nclass A(B):\n\tpass\n",
    'json {"a": [1, 2, {"b": null}], "c": "d\\n"} <tag attr="v"/>',
    "I'm you're he'll we've they'd IT'S SHOUTING",
    "\x00\x01 control \x7f bytes \ufffd replacement",
]


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_tokenizer) -> ArtifactStore:
    store = ArtifactStore(tmp_path_factory.mktemp("artifacts"))
    tiny_tokenizer.save(store.tokenizer_path("tiny"))
    return store


class Exported:
    """One configuration's chatforge model, its export and the `transformers` pair loaded from it."""

    def __init__(self, store: ArtifactStore, tokenizer: Tokenizer, name: str, options: dict, out: Path):
        config = GPTConfig(vocab_size=tokenizer.vocab_size, **{**BASE, **options})
        torch.manual_seed(0)
        model = GPT(config)
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.3)
        # as trainer/loop.py saves a checkpoint: weights, optimizer state, config and the extras
        optimizer = torch.optim.AdamW(model.parameters())
        self.checkpoint = checkpoint.save(
            store.stage_dir(name, "sft"), 7, model.state_dict(),
            optimizer_state={"optimizers": [optimizer.state_dict()]}, config=config.to_dict(),
            data_position=None, metrics={"loss": 1.0},
            extra={"tokenizer": "tiny", "stage": "sft", "run": name, "num_steps": 7},
        )  # fmt: skip
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.dir = export_hf(f"{name}/sft", out, store=store)
        self.hf = AutoModelForCausalLM.from_pretrained(self.dir, trust_remote_code=True).eval()
        self.hf_tokenizer = AutoTokenizer.from_pretrained(self.dir, trust_remote_code=True)


@pytest.fixture(scope="module")
def exported(store, tiny_tokenizer, tmp_path_factory):
    cache: dict[str, Exported] = {}

    def get(name: str) -> Exported:
        if name not in cache:
            out = tmp_path_factory.mktemp("export") / name
            cache[name] = Exported(store, tiny_tokenizer, name, CONFIGS[name], out)
        return cache[name]

    return get


# --- the model ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_logits_equal_chatforges(exported, name):
    e = exported(name)
    short, long = e.tokenizer.encode(PROMPT[:20]), e.tokenizer.encode(PROMPT * 3)[:90]
    assert len(long) > 60  # longer than any short window below
    for ids in (short, long):
        x = torch.tensor([[e.tokenizer.bos_id, *ids]])
        with torch.no_grad():
            ours, theirs = e.model(x), e.hf(x).logits
        assert theirs.shape == ours.shape == (1, x.size(1), e.tokenizer.vocab_size)
        assert ours.std() > 1.0  # the logits are far apart: agreement means something
        torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)


def test_every_model_option_is_exported():
    """A new GPTConfig field needs modeling_chatforge.py to compute it and EXPORTED_FIELDS to list it
    (export refuses a checkpoint with a field it does not know), and a configuration above."""
    assert {f.name for f in fields(GPTConfig)} <= EXPORTED_FIELDS
    tested = {key for options in CONFIGS.values() for key in options}
    assert tested >= {"n_kv_head", "window_pattern", "short_window", "value_embeds"}


def test_the_exported_code_needs_only_torch_and_transformers():
    for filename in REMOTE_CODE_FILES:
        tree = ast.parse((Path(hf.__file__).parent / filename).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            allowed = {"__future__", "typing", "torch", "transformers"}
            assert {n.split(".")[0] for n in names} <= allowed, f"{filename} imports {names}"


def test_training_loss_equals_chatforges(exported):
    """`labels` give the next-token loss chatforge trains on (fine-tuning in transformers)."""
    e = exported("all-options")
    x = torch.tensor([[e.tokenizer.bos_id, *e.tokenizer.encode(PROMPT)]])
    with torch.no_grad():
        ours = e.model(x[:, :-1], targets=x[:, 1:])
        theirs = e.hf(x, labels=x).loss
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_greedy_generate_equals_chatforges(exported, name):
    """`transformers` decodes with its KV cache, one token a step; chatforge recomputes everything."""
    e = exported(name)
    ids = [e.tokenizer.bos_id, *e.tokenizer.encode(PROMPT)]
    assert len(ids) + 24 <= BASE["sequence_len"]  # chatforge crops the context past it; HF does not
    ours = list(e.model.generate(ids, 24, temperature=0.0, stop_ids=reply_stop_ids(e.tokenizer)))
    out = e.hf.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False)
    assert out[0, len(ids) :].tolist() == ours
    assert len(ours) > 10


@pytest.mark.parametrize("name", ["gqa", "all-options"])
def test_transformers_config_saves_back_what_it_read(exported, name, tmp_path):
    e = exported(name)
    e.hf.config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert {k: saved[k] for k in e.model.config.to_dict()} == e.model.config.to_dict()


@pytest.mark.parametrize("name", ["gqa", "all-options"])
def test_a_left_padded_batch_generates_as_each_prompt_alone(exported, name):
    e = exported(name)
    tok = e.hf_tokenizer
    tok.padding_side = "left"
    prompts = ["Hello world, the model", PROMPT]
    batch = tok(prompts, return_tensors="pt", padding=True)
    assert (batch["attention_mask"] == 0).any()
    out = e.hf.generate(**batch, max_new_tokens=12, do_sample=False, eos_token_id=None)
    for row, text in enumerate(prompts):
        alone = e.hf.generate(tok(text, return_tensors="pt").input_ids, max_new_tokens=12, do_sample=False,
                              eos_token_id=None)  # fmt: skip
        assert out[row, -12:].tolist() == alone[0, -12:].tolist()


def test_generation_config_stops_at_the_reply_end_and_samples_like_chatforge(exported):
    e = exported("gqa")
    generation = e.hf.generation_config
    assert sorted(generation.eos_token_id) == sorted(reply_stop_ids(e.tokenizer))
    assert generation.pad_token_id == e.tokenizer.bos_id
    assert generation.do_sample and generation.temperature == DEFAULT_TEMPERATURE
    assert generation.top_k == DEFAULT_TOP_K and generation.max_new_tokens == DEFAULT_MAX_TOKENS
    config = json.loads((e.dir / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_chatforge.ChatforgeForCausalLM"
    assert config["chatforge"]["step"] == 7 and config["chatforge"]["tokenizer"] == "tiny"


# --- the tokenizer and the chat template ----------------------------------------------------


def test_tokenizer_ids_and_text_equal_chatforges(exported, tiny_tokenizer):
    tok = exported("gqa").hf_tokenizer
    for text in TEXTS:
        ids = tiny_tokenizer.encode(text)
        assert tok(text, add_special_tokens=False).input_ids == ids, text
        assert tok.decode(ids) == tiny_tokenizer.decode(ids) == text, text
    # a multi-byte character cut in half decodes to U+FFFD on both sides
    rare = tiny_tokenizer.encode("龍")  # not in the training text: three byte tokens
    assert len(rare) == 3
    assert tok.decode(rare[:2]) == tiny_tokenizer.decode(rare[:2]) == "\ufffd"
    # special tokens: the ids and their names
    specials = [tiny_tokenizer.special_id(s) for s in SPECIAL_TOKENS]
    assert tok.convert_ids_to_tokens(specials) == list(SPECIAL_TOKENS)
    assert tok.decode(specials) == tiny_tokenizer.decode(specials) == "".join(SPECIAL_TOKENS)
    assert tok.bos_token_id == tiny_tokenizer.bos_id
    assert tok.eos_token_id == tiny_tokenizer.special_id("<|assistant_end|>")


def test_special_token_names_in_text(exported, tiny_tokenizer):
    """`transformers` matches added tokens inside text (that is how its chat template reaches them);
    with split_special_tokens it encodes them as text, as chatforge's encode always does."""
    tok = exported("gqa").hf_tokenizer
    text = "before<|bos|>middle <|assistant_start|> after"
    expected = [
        *tiny_tokenizer.encode("before"), tiny_tokenizer.bos_id, *tiny_tokenizer.encode("middle "),
        tiny_tokenizer.special_id("<|assistant_start|>"), *tiny_tokenizer.encode(" after"),
    ]  # fmt: skip
    assert tok(text, add_special_tokens=False).input_ids == expected
    assert tok(text, add_special_tokens=False, split_special_tokens=True).input_ids == tiny_tokenizer.encode(
        text
    )


CONVERSATIONS = [
    [{"role": "user", "content": "Hi there!"}],
    [
        {"role": "system", "content": "You are a helpful assistant named Forge."},
        {"role": "user", "content": "What is 12 + 30?"},
        {"role": "assistant", "content": "It is 42."},
        {"role": "user", "content": "東京は? 😀"},
    ],
    [
        {"role": "user", "content": [{"type": "text", "text": "Compute 2**10 with python"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me run it. "},
                {"type": "python", "text": "print(2**10)"},
                {"type": "python_output", "text": "1024\n"},
                {"type": "text", "text": " So it is 1024."},
            ],
        },
        {"role": "user", "content": "thanks\n\n  and now?"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "def f(x):\n    return x"},
    ],
]


@pytest.mark.parametrize("conversation", CONVERSATIONS, ids=["one-turn", "system-multi-turn", "tools"])
def test_chat_template_renders_chatforges_ids(exported, tiny_tokenizer, conversation):
    tok = exported("gqa").hf_tokenizer
    prompt = tok.apply_chat_template(
        conversation, add_generation_prompt=True, tokenize=True, return_dict=True
    )
    assert prompt["input_ids"] == render_for_completion(tiny_tokenizer, conversation)
    answered = [*conversation, {"role": "assistant", "content": "Sure: 7 * 6 = 42."}]
    whole = tok.apply_chat_template(answered, tokenize=True, return_dict=True)
    assert whole["input_ids"] == render_conversation(tiny_tokenizer, answered).ids


def test_chat_template_refuses_what_chatforge_refuses(exported):
    tok = exported("gqa").hf_tokenizer
    for bad in (
        [{"role": "assistant", "content": "I start"}],
        [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
        [{"role": "system", "content": "only a system message"}],
    ):
        with pytest.raises(Exception, match="alternate|no user message"):
            tok.apply_chat_template(bad, add_generation_prompt=True, tokenize=False)


# --- import: the round trip -----------------------------------------------------------------


def test_import_round_trips_weights_and_tokenizer(exported, store, tiny_tokenizer):
    e = exported("gqa")
    path = import_hf(e.dir, "back/sft", store=store, tokenizer_name="tiny-back")
    assert path == store.stage_dir("back", "sft") / "step_000007"
    original = load_file(str(e.checkpoint / checkpoint.MODEL_FILE))
    imported = load_file(str(path / checkpoint.MODEL_FILE))
    assert sorted(imported) == sorted(original)
    for key, tensor in original.items():
        assert imported[key].dtype == tensor.dtype and torch.equal(imported[key], tensor), key
    back = Tokenizer.load(store.find_tokenizer("tiny-back"))
    assert back.fingerprint() == tiny_tokenizer.fingerprint()
    for text in TEXTS:
        assert back.encode(text) == tiny_tokenizer.encode(text)
    assert back.special_ids == tiny_tokenizer.special_ids
    loaded = load_model("back/sft", store, device="cpu")
    assert loaded.tokenizer is not None and loaded.tokenizer.name == "tiny-back"
    assert loaded.model.config == e.model.config and loaded.step == 7
    x = torch.tensor([[tiny_tokenizer.bos_id, *tiny_tokenizer.encode(PROMPT)]])
    assert torch.equal(loaded.model(x), e.model(x))

    with pytest.raises(ValueError, match="already exists: pass --force"):
        import_hf(e.dir, "back/sft", store=store, tokenizer_name="tiny-back")
    assert import_hf(e.dir, "back/sft", store=store, tokenizer_name="tiny-back", force=True) == path
    # the tokenizer's exported name is taken when free or holding the same tokenizer ...
    assert checkpoint.read_meta(import_hf(e.dir, "again/sft", store=store))["tokenizer"] == "tiny"
    # ... and a different tokenizer under that name is refused
    other = Tokenizer.train(["a completely different corpus of words " * 50], vocab_size=300, name="x")
    other.save(store.tokenizer_path("taken"))
    with pytest.raises(ValueError, match="different tokenizer named 'taken'"):
        import_hf(e.dir, "third/sft", store=store, tokenizer_name="taken")


def test_a_model_fine_tuned_in_transformers_comes_back(exported, store, tmp_path):
    """Export, one training step in `transformers`, `save_pretrained`, import: chatforge then computes
    what the fine-tuned model computes."""
    e = exported("all-options")
    model = AutoModelForCausalLM.from_pretrained(e.dir, trust_remote_code=True)
    x = torch.tensor([[e.tokenizer.bos_id, *e.tokenizer.encode(PROMPT)]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(x, labels=x).loss.backward()
    optimizer.step()
    saved = tmp_path / "fine-tuned"
    model.save_pretrained(saved)
    e.hf_tokenizer.save_pretrained(saved)
    path = import_hf(saved, "tuned/sft", store=store)
    loaded = load_model("tuned/sft", store, device="cpu")
    assert loaded.path == path and loaded.tokenizer is not None
    assert loaded.model.config == e.model.config
    assert loaded.tokenizer.fingerprint() == e.tokenizer.fingerprint()
    with torch.no_grad():
        tuned, ours, before = model.eval()(x).logits, loaded.model(x), e.model(x)
    torch.testing.assert_close(ours, tuned, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(ours, before, atol=1e-2)  # the step changed the model


# --- the command line -----------------------------------------------------------------------


def test_cli_exports_and_imports_in_a_real_process(exported, store, tmp_path):
    exported("gqa")  # the checkpoint gqa/sft
    env = {**os.environ, "CHATFORGE_ARTIFACTS": str(store.root)}
    out = tmp_path / "model"
    done = subprocess.run(
        [sys.executable, "-m", "chatforge.cli", "export", "hf", "gqa/sft", str(out)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"exported gqa/sft to {out}" in done.stdout
    files = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "configuration_chatforge.py", "modeling_chatforge.py",
            "tokenizer.json", "tokenizer_config.json", "generation_config.json", "README.md"} <= files  # fmt: skip
    assert "exported from checkpoint `gqa/sft`" in (out / "README.md").read_text()
    # the directory stands alone: transformers loads and runs it where chatforge cannot be imported
    code = (
        "import sys; sys.modules['chatforge'] = None\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"model = AutoModelForCausalLM.from_pretrained({str(out)!r}, trust_remote_code=True)\n"
        f"tok = AutoTokenizer.from_pretrained({str(out)!r}, trust_remote_code=True)\n"
        "ids = tok.apply_chat_template([{'role': 'user', 'content': 'hi'}], add_generation_prompt=True,"
        " return_tensors='pt', return_dict=True)\n"
        "print(model.generate(**ids, max_new_tokens=3, do_sample=False).shape[1] - ids['input_ids'].shape[1])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] in ("1", "2", "3")  # generated, maybe stopping at a reply end
    done = subprocess.run(
        [sys.executable, "-m", "chatforge.cli", "import", "hf", str(out), "cli/sft", "--tokenizer-name", "tiny"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (store.stage_dir("cli", "sft") / "step_000007" / "meta.json").is_file()


def test_cli_bad_input_is_one_line(exported, store, tmp_path, capsys):
    exported("gqa")
    capsys.readouterr()  # transformers' loading bar
    art = ["--artifacts", str(store.root)]

    def fails(*argv: str) -> str:
        assert main([*argv, *art]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        return err

    assert "no complete checkpoint for 'nope/sft'" in fails("export", "hf", "nope/sft", str(tmp_path / "a"))
    assert "does not exist" in fails("export", "hf", str(tmp_path / "missing"), str(tmp_path / "a"))
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    assert "is not empty: pass --force" in fails("export", "hf", "gqa/sft", str(full))
    assert (full / "notes.txt").read_text() == "mine"  # left alone
    assert main(["export", "hf", "gqa/sft", str(full), "--force", *art]) == 0
    assert not (full / "notes.txt").exists() and (full / "config.json").is_file()
    capsys.readouterr()

    assert "has no config.json" in fails("import", "hf", str(tmp_path), "x/sft")
    foreign = tmp_path / "llama"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"model_type": "llama"}')
    assert "model_type 'llama'" in fails("import", "hf", str(foreign), "x/sft")
    assert "does not exist" in fails("import", "hf", str(tmp_path / "missing"), "x/sft")
    assert "must be 'run/stage'" in fails("import", "hf", str(full), "just-a-run")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (broken / name).write_bytes((full / name).read_bytes())
    assert "model.safetensors is missing" in fails("import", "hf", str(broken), "x/sft")
    doc = json.loads((full / "tokenizer.json").read_text())
    doc["added_tokens"] = doc["added_tokens"][:-1]  # <|output_end|> gone
    (broken / "tokenizer.json").write_text(json.dumps(doc))
    assert "chatforge's special tokens are" in fails("import", "hf", str(broken), "x/sft")
    doc = json.loads((full / "tokenizer.json").read_text())
    doc["pre_tokenizer"] = None  # a BPE without chatforge's split pattern
    (broken / "tokenizer.json").write_text(json.dumps(doc))
    assert "not a chatforge tokenizer" in fails("import", "hf", str(broken), "x/sft")
    assert not store.stage_dir("x", "sft").exists()  # nothing written on the way to an error
