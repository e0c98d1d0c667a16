"""A chatforge checkpoint as a Hugging Face `transformers` model directory, and back.

    chatforge export hf run/sft out/my-model       ->  out/my-model/
        model.safetensors          the weights, float32 as trained, under `transformers` names
        config.json                GPTConfig's fields, `auto_map` to the two files below
        configuration_chatforge.py, modeling_chatforge.py
                                   the architecture for `trust_remote_code=True` (torch + transformers)
        tokenizer.json             the byte-level BPE with the special tokens as added tokens
        tokenizer_config.json      special tokens and the chat template
        generation_config.json     stop at the reply's end; chatforge's sampling defaults
        README.md                  a model card: provenance, architecture, how to load it
    chatforge import hf out/my-model run2/sft      ->  a checkpoint and a tokenizer in the store

The exported model computes what `chatforge.model.GPT` computes (tests/chatforge/test_export_hf.py
checks the logits, greedy generation, tokenizer ids and the chat template against chatforge's own).
The seams that a new architecture option passes through are `EXPORTED_FIELDS` (what the modeling
file implements) and `hf_key`/`chatforge_key` (the weight names); export refuses a checkpoint whose
config has a field the modeling file does not know, instead of writing a model that computes
something else.

One difference is inherent to `transformers` tokenizers: the special tokens are "added tokens",
matched inside any text given to `encode` (how the chat template, which renders text, reaches them),
whereas chatforge's `Tokenizer.encode` never produces a special id. So a message that contains a
special token's name renders as that token through the template; `tokenizer(text,
split_special_tokens=True)` gives chatforge's ids for such text.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Any

from chatforge import checkpoint
from chatforge.artifacts import ArtifactStore, check_name
from chatforge.chat import REPLY_ENDS
from chatforge.contracts.sampling import DEFAULT_MAX_TOKENS, DEFAULT_TEMPERATURE, DEFAULT_TOP_K, DEFAULT_TOP_P
from chatforge.contracts.tokens import SPECIAL_TOKENS

FORMAT = "chatforge.hf_export"
FORMAT_VERSION = 1
MODEL_TYPE = "chatforge"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
README_FILE = "README.md"  # the model card: where the weights come from and how to load them
# The architecture, copied verbatim from this package into every export.
REMOTE_CODE_FILES: tuple[str, ...] = ("configuration_chatforge.py", "modeling_chatforge.py")
AUTO_MAP = {
    "AutoConfig": "configuration_chatforge.ChatforgeConfig",
    "AutoModelForCausalLM": "modeling_chatforge.ChatforgeForCausalLM",
}

# The GPTConfig fields modeling_chatforge.py implements. A new architecture option is exported once
# the modeling file computes it (and the export test covers it) and its field is listed here.
EXPORTED_FIELDS: frozenset[str] = frozenset(
    {
        "vocab_size",
        "n_layer",
        "n_embd",
        "n_head",
        "n_kv_head",
        "sequence_len",
        "logit_softcap",
        "rope_base",
        "vocab_multiple",
        "window_pattern",
        "short_window",
        "value_embeds",
    }
)


class ExportError(ValueError):
    """An export or import that cannot be done: the message names the path or field to change."""


def export_hf(
    name: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, store: ArtifactStore | None = None,
    force: bool = False,
) -> Path:  # fmt: skip
    """Write checkpoint `name` (artifact name or directory) as a `transformers` model directory.

    An existing non-empty `out_dir` is an error unless `force`, which replaces it. The directory is
    assembled beside its final place and renamed into it, so a failure leaves no half export.
    """
    from safetensors.torch import save_file

    from chatforge.loading import load_model

    out = Path(out_dir)
    _check_target(out, force)
    store = store or ArtifactStore.from_env()
    if (Path(name).is_absolute() or str(name).startswith(".")) and not Path(name).is_dir():
        raise ExportError(f"checkpoint directory {name} does not exist")
    loaded = load_model(name, store, device="cpu")
    config = loaded.model.config.to_dict()
    unknown = sorted(set(config) - EXPORTED_FIELDS)
    if unknown:
        raise ExportError(
            f"checkpoint {loaded.path} uses model options {unknown} that the transformers export does "
            "not implement yet (chatforge/export/modeling_chatforge.py)"
        )
    tokenizer = loaded.tokenizer
    assert tokenizer is not None  # load_model requires one by default
    meta = loaded.meta
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        weights = {hf_key(k): v.detach().contiguous() for k, v in loaded.model.state_dict().items()}
        save_file(weights, str(tmp / MODEL_FILE), metadata={"format": "pt"})
        here = Path(__file__).resolve().parent
        for filename in REMOTE_CODE_FILES:
            shutil.copyfile(here / filename, tmp / filename)
        specials = {s: tokenizer.special_id(s) for s in SPECIAL_TOKENS}
        stops = [specials[s] for s in REPLY_ENDS]
        origin = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "checkpoint": str(name),
            "step": loaded.step,
            "run": meta.get("run"),
            "stage": meta.get("stage"),
            "tokenizer": meta.get("tokenizer") or tokenizer.name,  # its name in the artifact store
            "tokenizer_fingerprint": tokenizer.fingerprint(),
            "code_version": meta.get("code_version"),
        }
        _write_json(tmp / CONFIG_FILE, {
            "architectures": ["ChatforgeForCausalLM"],
            "model_type": MODEL_TYPE,
            "auto_map": AUTO_MAP,
            **config,
            "bos_token_id": specials["<|bos|>"],
            "eos_token_id": stops,
            "pad_token_id": specials["<|bos|>"],  # the trainer pads with <|bos|> too
            "tie_word_embeddings": False,
            "use_cache": True,
            "dtype": str(next(iter(weights.values())).dtype).removeprefix("torch."),
            "chatforge": origin,
        })  # fmt: skip
        (tmp / TOKENIZER_FILE).write_text(hf_tokenizer_json(tokenizer), encoding="utf-8")
        _write_json(tmp / TOKENIZER_CONFIG_FILE, {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": "<|bos|>",
            "eos_token": REPLY_ENDS[0],
            "pad_token": "<|bos|>",
            "additional_special_tokens": [s for s in SPECIAL_TOKENS if s not in ("<|bos|>", REPLY_ENDS[0])],
            "add_bos_token": False,  # encode() is chatforge's encode: no <|bos|> unless asked for
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": config["sequence_len"],
            "model_input_names": ["input_ids", "attention_mask"],  # no token_type_ids for generate()
            "chat_template": CHAT_TEMPLATE,
        })  # fmt: skip
        _write_json(tmp / GENERATION_CONFIG_FILE, {
            "bos_token_id": specials["<|bos|>"],
            "eos_token_id": stops,
            "pad_token_id": specials["<|bos|>"],
            "do_sample": True,
            "temperature": DEFAULT_TEMPERATURE,
            "top_k": DEFAULT_TOP_K,
            "top_p": DEFAULT_TOP_P,
            "max_new_tokens": DEFAULT_MAX_TOKENS,
        })  # fmt: skip
        (tmp / README_FILE).write_text(_model_card(origin, config), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def import_hf(
    src_dir: str | os.PathLike[str], name: str, *, store: ArtifactStore | None = None,
    tokenizer_name: str | None = None, force: bool = False,
) -> Path:  # fmt: skip
    """Write the export in `src_dir` as checkpoint `name` ("run/stage", at the exported step) and its
    tokenizer into the artifact store; returns the checkpoint directory.

    The tokenizer keeps the name it was exported with unless `tokenizer_name` is given; a different
    tokenizer already stored under that name is an error (the same one is reused).
    """
    import torch
    from safetensors.torch import load_file

    from chatforge.model import GPT, GPTConfig
    from chatforge.tokenizer import Tokenizer

    store = store or ArtifactStore.from_env()
    run, stage = _checkpoint_name(name)
    src = Path(src_dir)
    hf_config = _read_export_config(src)
    origin: dict[str, Any] = hf_config["chatforge"] if isinstance(hf_config.get("chatforge"), dict) else {}
    gpt_fields = {f.name for f in fields(GPTConfig)}
    try:
        config = GPTConfig.from_dict({k: v for k, v in hf_config.items() if k in gpt_fields})
    except (TypeError, ValueError) as e:
        raise ExportError(f"{src / CONFIG_FILE} does not describe a chatforge GPT: {e}") from None

    tokenizer_name = check_name("tokenizer", tokenizer_name or str(origin.get("tokenizer") or run))
    tokenizer = Tokenizer.from_hf_json(_ordinary_tokenizer_json(src / TOKENIZER_FILE), name=tokenizer_name)
    if tokenizer.vocab_size != config.vocab_size:
        raise ExportError(
            f"{src / TOKENIZER_FILE} has {tokenizer.vocab_size} ids but {src / CONFIG_FILE} says "
            f"vocab_size {config.vocab_size}: they do not belong together"
        )
    tokenizer_path = store.tokenizer_path(tokenizer_name)
    if tokenizer_path.is_file() and Tokenizer.load(tokenizer_path).fingerprint() != tokenizer.fingerprint():
        raise ExportError(
            f"the store already has a different tokenizer named {tokenizer_name!r}: "
            "choose another name with --tokenizer-name"
        )
    step = int(origin.get("step") or 0)
    target = store.stage_dir(run, stage) / checkpoint.step_dir_name(step)
    if target.exists() and not force:
        raise ExportError(f"checkpoint {target} already exists: pass --force to replace it")

    weights_path = src / MODEL_FILE
    if not weights_path.is_file():
        raise ExportError(f"{weights_path} is missing: {src} is not a complete export")
    try:
        state = {chatforge_key(k): v for k, v in load_file(str(weights_path)).items()}
    except Exception as e:  # safetensors raises its own error types
        raise ExportError(f"{weights_path} cannot be read as safetensors: {e}") from None
    # Names and shapes checked against a model on the meta device: nothing allocated, nothing copied
    # (torch warns that loading into meta tensors is a no-op, which is the point here).
    with torch.device("meta"):
        model = GPT(config)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*meta parameter.*")
            checkpoint.load_state_into(model, state, source=src)
    except checkpoint.CheckpointError as e:
        raise ExportError(str(e)) from None

    if not tokenizer_path.is_file():
        tokenizer.save(tokenizer_path)
    extra = {"tokenizer": tokenizer_name, "stage": stage, "run": run, "imported_from": str(src.absolute())}
    metrics = {"imported_step": step}
    return checkpoint.save(
        store.stage_dir(run, stage), step, state, config=config.to_dict(), metrics=metrics, extra=extra
    )


# --- the seams: weight names and the tokenizer ----------------------------------------------


def hf_key(name: str) -> str:
    """A chatforge weight name under `transformers`: the body under `model.`, the head as it is."""
    return name if name.startswith("lm_head.") else f"model.{name}"


def chatforge_key(name: str) -> str:
    """The inverse of `hf_key`."""
    return name.removeprefix("model.")


def hf_tokenizer_json(tokenizer: Any) -> str:
    """chatforge's BPE as a `tokenizers` JSON with the special tokens added at their chatforge ids."""
    from tokenizers import AddedToken
    from tokenizers import Tokenizer as HFTokenizer

    hf = HFTokenizer.from_str(tokenizer.hf_json())
    hf.add_special_tokens(
        [AddedToken(s, special=True, normalized=False, lstrip=False, rstrip=False) for s in SPECIAL_TOKENS]
    )
    got = {s: hf.token_to_id(s) for s in SPECIAL_TOKENS}
    want = {s: tokenizer.special_id(s) for s in SPECIAL_TOKENS}
    if got != want:
        raise ExportError(f"special token ids differ after export: {got} vs chatforge's {want}")
    return str(hf.to_str(pretty=True))


def _ordinary_tokenizer_json(path: Path) -> str:
    """The exported tokenizer.json without its added tokens, which must be exactly chatforge's
    special tokens in order, right after the ordinary vocabulary."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        added = doc.pop("added_tokens", [])
        n_base = len(doc["model"]["vocab"])
    except FileNotFoundError:
        raise ExportError(f"{path} is missing: the export has no tokenizer") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ExportError(f"{path} is not a tokenizers JSON file: {e}") from None
    found = [(a.get("content"), a.get("id")) for a in added if isinstance(a, dict)]
    expected = [(s, n_base + i) for i, s in enumerate(SPECIAL_TOKENS)]
    if found != expected:
        raise ExportError(f"{path} adds tokens {found[:12]}; chatforge's special tokens are {expected}")
    doc["added_tokens"] = []
    # `transformers` writes an identity post-processor when it saves a tokenizer (a model
    # fine-tuned there and saved with save_pretrained): one that adds no token is chatforge's none.
    post = doc.get("post_processor")
    if isinstance(post, dict) and post.get("type") == "TemplateProcessing" and not post.get("special_tokens"):
        single = [next(iter(piece)) for piece in post.get("single", [])]
        if single == ["Sequence"]:
            doc["post_processor"] = None
    return json.dumps(doc)


# --- the chat template ----------------------------------------------------------------------
# The Jinja twin of chatforge.chat.render_conversation / render_for_completion: <|bos|>; a system
# message merged into the first user turn ("system\n\nuser"); user turns between <|user_start|> and
# <|user_end|>; assistant turns between <|assistant_start|> and <|assistant_end|>, with python calls
# and tool output in their own tokens; <|assistant_start|> as the generation prompt. Each segment
# between special tokens is encoded on its own, as chatforge encodes each text part. (Two text parts
# in a row are one string here but two encodings in chatforge: send one part.)
CHAT_TEMPLATE = "".join(
    [
        "{%- macro text_of(content) -%}",
        "{%- if content is string -%}{{ content }}",
        "{%- else -%}{%- for part in content -%}",
        "{%- if part.type is not defined or part.type == 'text' -%}{{ part.text }}{%- endif -%}",
        "{%- endfor -%}{%- endif -%}",
        "{%- endmacro -%}",
        "{%- if not messages -%}{{ raise_exception('conversation is empty') }}{%- endif -%}",
        "{%- set ns = namespace(system='', start=0) -%}",
        "{%- if messages[0].role == 'system' -%}",
        "{%- set ns.system = text_of(messages[0].content) + '\\n\\n' -%}{%- set ns.start = 1 -%}",
        "{%- endif -%}",
        "{%- if messages | length <= ns.start -%}{{ raise_exception('no user message') }}{%- endif -%}",
        "<|bos|>",
        "{%- for message in messages[ns.start:] -%}",
        "{%- if message.role == ('user' if loop.index0 % 2 == 0 else 'assistant') -%}",
        "{%- else -%}{{ raise_exception('turns must alternate user, assistant, user, ...') }}{%- endif -%}",
        "{%- if message.role == 'user' -%}",
        "<|user_start|>{{ (ns.system if loop.first else '') + text_of(message.content) }}<|user_end|>",
        "{%- else -%}",
        "<|assistant_start|>",
        "{%- if message.content is string -%}{{ message.content }}",
        "{%- else -%}{%- for part in message.content -%}",
        "{%- if part.type == 'python' -%}<|python_start|>{{ part.text }}<|python_end|>",
        "{%- elif part.type == 'python_output' -%}<|output_start|>{{ part.text }}<|output_end|>",
        "{%- else -%}{{ part.text }}{%- endif -%}",
        "{%- endfor -%}{%- endif -%}",
        "<|assistant_end|>",
        "{%- endif -%}",
        "{%- endfor -%}",
        "{%- if add_generation_prompt -%}<|assistant_start|>{%- endif -%}",
    ]
)


# --- helpers --------------------------------------------------------------------------------


def _check_target(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ExportError(f"{out} is not empty: pass --force to replace it")


def _checkpoint_name(name: str) -> tuple[str, str]:
    parts = name.strip("/").split("/")
    if len(parts) != 2:
        raise ExportError(f"checkpoint name {name!r} must be 'run/stage' (the step is the exported one)")
    return check_name("run", parts[0]), check_name("stage", parts[1])


def _read_export_config(src: Path) -> dict[str, Any]:
    if not src.is_dir():
        raise ExportError(f"{src} does not exist or is not a directory")
    path = src / CONFIG_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(f"{src} is not a chatforge export: it has no {CONFIG_FILE}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportError(f"{path} is unreadable or not JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("model_type") != MODEL_TYPE:
        got = doc.get("model_type") if isinstance(doc, dict) else None
        raise ExportError(f"{src} is not a chatforge export: {CONFIG_FILE} has model_type {got!r}")
    return doc


def _model_card(origin: dict[str, Any], config: dict[str, Any]) -> str:
    options = [f"{config['n_kv_head']} key/value heads for {config['n_head']} query heads"]
    if "S" in str(config.get("window_pattern", "L")).upper():
        options.append(
            f"sliding-window pattern {config['window_pattern']} (short window {config['short_window']})"
        )
    if config.get("value_embeds"):
        options.append("value embeddings")
    return f"""---
library_name: transformers
pipeline_tag: text-generation
---

# {origin["run"] or "chatforge"} ({origin["stage"] or "model"}, step {origin["step"]})

A GPT trained from scratch with chatforge, exported from checkpoint `{origin["checkpoint"]}` (code
version `{origin["code_version"]}`): {config["n_layer"]} layers, width {config["n_embd"]},
{", ".join(options)}, a context of {config["sequence_len"]} tokens and a vocabulary of
{config["vocab_size"]}. Rotary positions, QK-norm, RMSNorm without learnable scale, a ReLU² MLP, no
biases, an untied head and a logit softcap of {config["logit_softcap"]}: not a Llama, so loading
runs the architecture in `modeling_chatforge.py` (torch and `transformers` only).

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained(".", trust_remote_code=True)
tok = AutoTokenizer.from_pretrained(".", trust_remote_code=True)
inputs = tok.apply_chat_template([{{"role": "user", "content": "Hello!"}}],
                                 add_generation_prompt=True, return_tensors="pt", return_dict=True)
reply = model.generate(**inputs)[0, inputs["input_ids"].shape[1]:]
print(tok.decode(reply, skip_special_tokens=True))
```

Generation stops at `<|assistant_end|>` (or a stray `<|bos|>`). A reply may call the python tool:
`<|python_start|>code<|python_end|>`; chatforge runs the code in its sandbox and appends
`<|output_start|>output<|output_end|>` before the reply goes on, which `generate` alone does not:
to do the same, append those ids (`tok.convert_tokens_to_ids`, `tok.encode(output)`) to the
generated ones and generate again.

The chat template renders exactly the token ids chatforge trained on. Special token names typed
into a message become special tokens (chatforge itself never does that): strip them from untrusted
text. `chatforge import hf <this directory> <run/stage>` brings the model back into chatforge.
"""


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
