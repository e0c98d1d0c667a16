"""Grafana dashboards and alert rules: valid JSON/YAML whose PromQL names metrics the code exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from .chart import CHART, FULL_VALUES, ROOT, by_kind, render

DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
SOURCE_DIRS = ("chatforge", "trainer", "tokenizer-svc", "inference-svc", "services")
# The engine's and the trainer's metrics reach Prometheus through Ray's metrics agent, which adds
# the `ray_` prefix (inference_svc/metrics.py, trainer/telemetry.py).
METRIC = re.compile(r"\b(?:ray_)?chatforge_[a-z0-9_]+\b")
# prometheus_client exposes a counter `x` as x_total and a histogram `x` as x_bucket/_sum/_count.
SUFFIXES = ("_total", "_bucket", "_sum", "_count")


def exported_metric_names() -> set[str]:
    """Every chatforge_* name given as a string literal in the services' and trainer's code."""
    names: set[str] = set()
    literal = re.compile(r"[\"'](chatforge_[a-z0-9_]+)[\"']")
    for folder in SOURCE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            names.update(literal.findall(path.read_text(encoding="utf-8")))
    return names


def unknown_metrics(expr: str, exported: set[str]) -> list[str]:
    unknown = []
    for name in METRIC.findall(expr):
        name = name.removeprefix("ray_")
        bases = {name} | {name[: -len(s)] for s in SUFFIXES if name.endswith(s)}
        if not bases & exported:
            unknown.append(name)
    return unknown


def balanced(expr: str) -> bool:
    stack = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for ch in re.sub(r'"[^"]*"', '""', expr):  # brackets inside label values do not count
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            return False
    return not stack


def panels(dashboard: dict) -> list[dict]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return out


def test_the_three_dashboards_ship() -> None:
    assert {p.stem for p in DASHBOARDS} >= {"serving", "training", "gateway"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_dashboard_is_well_formed(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"].startswith("chatforge-") and dashboard["title"].startswith("chatforge / ")
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace"} <= variables
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    graphs = [p for p in panels(dashboard) if p["type"] != "row"]
    assert len(graphs) >= 6
    for panel in graphs:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            expr = target["expr"]
            assert balanced(expr), f"{panel['title']}: unbalanced brackets in {expr}"
            assert 'namespace=~"$namespace"' in expr, f"{panel['title']}: not filtered by namespace"


def test_dashboard_uids_are_unique() -> None:
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids))


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_dashboard_queries_name_metrics_the_code_exports(path: Path) -> None:
    exported = exported_metric_names()
    dashboard = json.loads(path.read_text())
    used = set()
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            assert not unknown_metrics(target["expr"], exported), f"{panel['title']}: {target['expr']}"
            used.update(METRIC.findall(target["expr"]))
    assert used, "the dashboard queries no chatforge metric"


def test_every_inference_metric_is_on_the_serving_dashboard() -> None:
    """vLLM's set, as the engine exports it: nothing it measures is left off the dashboard."""
    source = (ROOT / "inference-svc" / "inference_svc" / "metrics.py").read_text()
    declared = set(re.findall(r"[\"'](chatforge_[a-z0-9_]+)[\"']", source))
    text = (CHART / "dashboards" / "serving.json").read_text()
    missing = [name for name in declared if name not in text]
    assert not missing, f"exported by the engine but not plotted: {missing}"


def test_alert_rules_name_metrics_the_code_exports() -> None:
    exported = exported_metric_names()
    (rule,) = by_kind(render("-f", str(FULL_VALUES)), "PrometheusRule")
    alerts = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    names = {a["alert"] for a in alerts}
    assert {
        "ChatforgeInferenceQueueGrowing",
        "ChatforgeKVCacheFull",
        "ChatforgeGateway5xx",
        "ChatforgeTrainingJobFailed",
        "ChatforgeSandboxBusy",
    } <= names
    for alert in alerts:
        assert balanced(alert["expr"]), alert["alert"]
        assert not unknown_metrics(alert["expr"], exported), f"{alert['alert']}: {alert['expr']}"
        assert alert["labels"]["severity"] in ("info", "warning", "critical")
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
    # The thresholds come from values.
    kv = next(a for a in alerts if a["alert"] == "ChatforgeKVCacheFull")
    assert kv["expr"].rstrip().endswith("> 0.95")


def test_dashboards_ship_as_sidecar_configmaps() -> None:
    objects = render("-f", str(FULL_VALUES))
    maps = [
        c for c in by_kind(objects, "ConfigMap") if "grafana_dashboard" in c["metadata"].get("labels", {})
    ]
    shipped = {key: json.loads(body) for cm in maps for key, body in cm["data"].items()}
    assert set(shipped) == {p.name for p in DASHBOARDS}
    for path in DASHBOARDS:
        assert shipped[path.name] == json.loads(path.read_text())
    assert all(cm["metadata"]["annotations"]["grafana_folder"] == "chatforge" for cm in maps)
    assert yaml.safe_dump(maps)  # plain data all the way down
