"""Metrics sources against the runtime's real series: a real Prometheus scraping them, and
a direct scrape of /metrics."""

from __future__ import annotations

import time

import httpx
import pytest

from specfleet.local.prometheus import LocalPrometheus, ScrapeTarget
from prometheus_client.parser import text_string_to_metric_families

from specfleet_operator.control.metrics_source import (
    WANTED_SAMPLES,
    MetricsUnavailable,
    PrometheusSource,
    ScrapeSource,
    parse_exposition,
)

from control_exporters import Exporter, start_exporter


@pytest.fixture
def exporters():
    started = [start_exporter("r0"), start_exporter("r1")]
    yield started
    for e in started:
        e.stop()


@pytest.fixture
def prometheus(tmp_path, exporters):
    prom = LocalPrometheus(tmp_path / "prom", scrape_interval=0.5)
    prom.set_targets([ScrapeTarget(e.name, e.address) for e in exporters])
    with prom:
        wait_scraped(prom, len(exporters))
        yield prom


def wait_scraped(prom: LocalPrometheus, n: int, timeout: float = 30.0) -> None:
    """Until Prometheus scrapes all n targets (file discovery takes a few seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        up = httpx.get(f"{prom.url}/api/v1/query", params={"query": "sum(up)"}).json()["data"]["result"]
        if up and float(up[0]["value"][1]) == n:
            return
        time.sleep(0.3)
    raise AssertionError(f"prometheus did not scrape {n} targets within {timeout}s")


def feed(exporter: Exporter, steps: int, accepted: list[int], batch: int = 2) -> None:
    for _ in range(steps):
        exporter.drafting_step(batch, len(accepted), accepted, t_target=0.02, t_draft=0.002)


async def wait_for(predicate, source, replicas, window, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        windows = await source.fetch(replicas, window)
        if predicate(windows) or time.monotonic() > deadline:
            return windows
        time.sleep(0.5)


def test_one_query_per_metric_family_covers_every_replica() -> None:
    source = PrometheusSource("http://127.0.0.1:1", {"namespace": "ml"})
    queries = source.queries(["web-0", "web-1.x"], 30)
    assert len(queries) == 13
    for promql in queries.values():
        assert 'pod=~"web\\\\-0|web\\\\-1\\\\.x"' in promql and 'namespace="ml"' in promql
    assert queries["specfleet_decode_batch_size_bucket"] == (
        'sum by (pod, le) (increase(specfleet_decode_batch_size_bucket'
        '{namespace="ml",pod=~"web\\\\-0|web\\\\-1\\\\.x"}[30s]))'
    )


async def test_prometheus_windows_carry_per_position_acceptance_costs_and_batches(prometheus, exporters) -> None:
    r0, r1 = exporters
    source = PrometheusSource(prometheus.url)
    replicas = {e.name: e.base_url for e in exporters}
    # Series are born at the first step; Prometheus counts increases only after it has seen
    # them once, so feed over several scrapes.
    for _ in range(8):
        feed(r0, 10, [2, 1, 0])
        feed(r1, 10, [1, 0, 0])
        time.sleep(0.5)
    windows = await wait_for(
        lambda w: len(w) == 2 and all(x.accepted_per_pos and x.forward for x in w.values()), source, replicas, 30
    )

    w0, w1 = windows["r0"], windows["r1"]
    p0 = [a / d for a, d in zip(w0.accepted_per_pos, w0.draft_tokens_per_pos)]
    p1 = [a / d for a, d in zip(w1.accepted_per_pos, w1.draft_tokens_per_pos)]
    assert p0 == pytest.approx([1.0, 0.5, 0.0], abs=0.02)
    assert p1 == pytest.approx([0.5, 0.0, 0.0], abs=0.02)
    verify = w0.forward[("target", "verify")][8]  # 2 sequences x (3 + 1) tokens
    assert verify.passes > 0 and verify.seconds / verify.passes == pytest.approx(0.02, rel=0.01)
    assert verify.mean_tokens(8) == pytest.approx(8.0)
    drafts = w0.forward[("draft", "decode")][2]
    assert drafts.seconds / drafts.passes == pytest.approx(0.002, rel=0.01) and drafts.mean_tokens(2) == pytest.approx(2.0)
    assert w0.calibrated[("target", "decode")] == pytest.approx(
        {1: 0.01, 2: 0.01, 4: 0.01, 8: 0.02, 16: 0.04, 32: 0.08, 64: 0.16}
    )
    assert w0.calibrated[("target", "verify")] == pytest.approx({2: 0.01, 4: 0.01, 8: 0.01, 16: 0.02, 32: 0.04, 64: 0.08})
    batch_two = dict(w0.batch_histogram)
    assert batch_two[1.0] == 0 and batch_two[2.0] == pytest.approx(dict(w0.batch_histogram)[float("inf")])
    assert w0.mean_step_k() == pytest.approx(3.0, rel=0.01)
    assert set(w0.steps) == {(3, 2)}  # K 3, batch bucket 2
    step_seconds, forward_seconds, steps = w0.steps[(3, 2)]
    assert steps > 0 and step_seconds / steps == pytest.approx(0.02 + 3 * 0.002 + 0.003, rel=0.01)
    assert forward_seconds / steps == pytest.approx(0.02 + 3 * 0.002, rel=0.01)
    assert w0.speculation_enabled is True


async def test_a_replica_that_stops_answering_drops_out_of_the_fetch(prometheus, exporters) -> None:
    source = PrometheusSource(prometheus.url)
    replicas = {e.name: e.base_url for e in exporters}
    windows = await wait_for(lambda w: len(w) == 2, source, replicas, 30)
    assert set(windows) == {"r0", "r1"}
    exporters[1].stop()
    windows = await wait_for(lambda w: set(w) == {"r0"}, source, replicas, 30)
    assert set(windows) == {"r0"}
    exporters[1] = start_exporter("r1-stopped")  # the fixture stops whatever is in the list


async def test_an_unreachable_prometheus_is_metrics_unavailable(prometheus, exporters) -> None:
    prometheus.stop()
    with pytest.raises(MetricsUnavailable) as info:
        await PrometheusSource(prometheus.url, timeout_s=1).fetch({"r0": exporters[0].base_url}, 30)
    assert info.value.reason == "PrometheusUnreachable"


async def test_direct_scrape_windows_are_deltas_between_snapshots(exporters) -> None:
    r0, r1 = exporters
    source = ScrapeSource()
    replicas = {e.name: e.base_url for e in exporters}
    feed(r0, 5, [2, 1])
    first = await source.fetch(replicas, window_s=0.0)
    assert first["r0"].draft_tokens_per_pos == [0.0, 0.0]  # nothing to diff against yet
    assert first["r0"].calibrated[("draft", "decode")][4] == pytest.approx(0.001)

    feed(r0, 10, [2, 1])
    feed(r1, 3, [1, 1], batch=1)
    second = await source.fetch(replicas, window_s=0.0)
    assert second["r0"].draft_tokens_per_pos == [20.0, 20.0]
    assert second["r0"].accepted_per_pos == [20.0, 10.0]
    assert second["r1"].accepted_per_pos == [3.0, 3.0]
    assert dict(second["r1"].batch_histogram)[1.0] == 3.0
    assert second["r1"].steps[(2, 1)] == pytest.approx((3 * (0.02 + 2 * 0.002 + 0.003), 3 * (0.02 + 2 * 0.002), 3.0))

    r1.stop()
    third = await source.fetch(replicas, window_s=0.0)
    assert set(third) == {"r0"}
    assert third["r0"].draft_tokens_per_pos == [0.0, 0.0]
    exporters[1] = start_exporter("r1-stopped")

    r0.stop()
    exporters[0] = start_exporter("r0-stopped")
    with pytest.raises(MetricsUnavailable) as info:
        await source.fetch(replicas, window_s=0.0)
    assert info.value.reason == "ScrapeFailed"


def test_the_scrape_parses_only_the_policys_lines_and_reads_what_the_full_parser_reads(exporters) -> None:
    """A replica's /metrics, every family in it (TYPE lines, histograms, the process
    collector): the filtered parse gives exactly the full parse's samples of the policy's
    series."""
    feed(exporters[0], 5, [2, 1])
    text = httpx.get(exporters[0].base_url + "/metrics").text
    full = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in WANTED_SAMPLES
    }
    unread = {sample.name for family in text_string_to_metric_families(text) for sample in family.samples} - WANTED_SAMPLES
    assert unread and len(full) > 10  # the text holds other families too, and enough of ours
    assert parse_exposition(text) == full
