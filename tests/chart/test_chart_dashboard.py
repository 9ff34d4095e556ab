"""The Grafana dashboard ConfigMap: picked up by Grafana's sidecar, the speculation panels
asked for, queries Prometheus itself parses, and only metric names of the contract."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from chart_render import ALL_ON, by_kind, one, render

from specfleet.contract import Metric

# The operator's own series (scraped through the chart's ServiceMonitor): the break-even
# batch the control loop computes per replica, a gauge it is to export under this name.
OPERATOR_METRICS = {"specfleet_controller_break_even_batch"}
CONTRACT_METRICS = {v for k, v in vars(Metric).items() if k.isupper() and not k.endswith("_LABEL")}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# PromQL words that look like metric names before a "(" or "{": functions and keywords.
PROMQL_WORDS = {"sum", "by", "rate", "max", "count", "histogram_quantile", "le", "pod", "position"}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    cm = one(render(ALL_ON), "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    (body,) = cm["data"].values()
    return json.loads(body)


def exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    return {m for m in re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{", expr)} - PROMQL_WORDS


def test_dashboard_only_ships_when_enabled() -> None:
    assert not by_kind(render(), "ConfigMap")


def test_dashboard_has_the_speculation_panels(dashboard: dict[str, Any]) -> None:
    panels = {p["title"]: p for p in dashboard["panels"]}
    by_metric = {title: set().union(*(metric_names(t["expr"]) for t in p["targets"])) for title, p in panels.items()}
    assert {Metric.ACCEPTED_PER_POS, Metric.DRAFT_TOKENS_PER_POS} <= by_metric["Acceptance per position"]
    assert 'by (position)' in panels["Acceptance per position"]["targets"][0]["expr"]
    assert {f"{Metric.STEP_K}_sum", f"{Metric.STEP_K}_count"} <= by_metric["K per step"]
    assert f"{Metric.DECODE_BATCH_SIZE}_sum" in by_metric["Decode batch size"]
    assert "specfleet_controller_break_even_batch" in by_metric["Break-even batch vs observed batch"]
    assert by_metric["Tokens/s per replica"] == {Metric.GENERATION_TOKENS}
    assert "by (pod)" in panels["Tokens/s per replica"]["targets"][0]["expr"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_queries_use_only_known_metric_names(dashboard: dict[str, Any]) -> None:
    used = set().union(*map(metric_names, exprs(dashboard)))
    assert used
    for name in used:
        base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), name)
        assert name in CONTRACT_METRICS | OPERATOR_METRICS or base in CONTRACT_METRICS, name


def test_prometheus_parses_every_query(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """The real promtool checks each panel query (Grafana's variables filled in as Grafana would)."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make bootstrap` installs Debian's prometheus, which ships it"
    rules = []
    for i, expr in enumerate(exprs(dashboard)):
        concrete = expr.replace("$__rate_interval", "1m").replace("$namespace", ".*").replace("$pod", ".*")
        assert "$" not in concrete, concrete
        rules.append({"record": f"dashboard:query_{i}", "expr": concrete})
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules)} rules found" in proc.stdout


def test_dashboard_variables_filter_every_query(dashboard: dict[str, Any]) -> None:
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "pod"} <= variables
    for expr in exprs(dashboard):
        for selector in re.findall(r"\{([^}]*)\}", expr):
            assert 'namespace=~"$namespace"' in selector and 'pod=~"$pod"' in selector, expr
