"""The control loop end to end on CPU: real `specfleet serve` replicas, a real Prometheus
scraping them every second, the controller ticking through the local backend, and a load
generator. Everything asserted is what the controller computed from its measurements and
what the replicas then did (their own step-K histograms), never a hard-coded break-even.

The workload has a real break-even inside MAX_BATCH. The bundled target is too small for
that on two cores: at batch 32 its verify pass of 64 tokens costs only ~1.3x a 32-token
pass (per-sequence attention and per-op costs dominate, not FLOPs), so speculation pays
there and "K = 0 at high load" would be false. The replicas here serve a twin of it whose
MLPs are zero-padded to 32x the channels (`widen_mlp`: the same logits, so the draft's
acceptance is the real one) in bfloat16, one thread each (`threads_per_replica`), which
makes the pass compute bound from a few rows. With min_gain 0.3 (speculation must pay by
30% in the decode-step model) the controller's measured costs give K > 0 at batch 1 and
K = 0 near batch 30; at 16x the channels they put batch 30 within a few percent of the
margin (K = 2 at +31% in one of four runs), hence 32x. The replicas' own goodput, side by
side on both replicas (12 s per K, 24 tokens a request): one stream each, K = 0..4 gives
18, 28, 36, 38, 40 tok/s at 32x; at 16x and 32 streams each, 128, 128, 140, 122, 128 tok/s
(the widened target's prefill takes most of the time at 24 tokens a request), so K = 0
at high load costs nothing while speculating at low load doubles goodput."""

from __future__ import annotations

import asyncio
import json
import time
import httpx
import pytest

from model_factory import widen_mlp
from specfleet.contract import SpeculationConfig, constant_schedule
from specfleet.bench.load import LoadResult, run_load
from specfleet.local.prometheus import LocalPrometheus, ScrapeTarget
from specfleet.local.replicas import start_replicas
from specfleet.model_sources import resolve_local_model
from specfleet_operator.control.controller import ControlSettings, Controller, DecisionRecord
from specfleet_operator.control.fleet import Replica
from specfleet_operator.control.local_backend import LocalBackend
from specfleet_operator.control.metrics_source import (
    PrometheusSource, ReplicaWindow, parse_exposition, snapshot_delta, to_window,
)
from specfleet_operator.control.policy import PolicyParams

pytestmark = pytest.mark.slow

MAX_BATCH = 32
K_MAX = 4
TICK_S = 1.0
MIN_GAIN = 0.3
WIDEN = 32  # MLP channels of the served target, as a multiple of the bundled one's
PROMPT_CHARS = 160  # the end of each held-out prompt: short contexts keep attention cheap


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    path = resolve_local_model("bundled://pycode-target").parent / "heldout_prompts.jsonl"
    return [json.loads(line)["prompt"][-PROMPT_CHARS:] for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    bundled = resolve_local_model("bundled://pycode-target")
    intermediate = json.loads((bundled / "config.json").read_text())["intermediate_size"]
    target = widen_mlp(bundled, tmp_path_factory.mktemp("wide-target"), WIDEN * intermediate)
    with start_replicas(
        2, model=target, draft=resolve_local_model("bundled://pycode-draft"),
        method="draft", k_max=K_MAX, max_batch=MAX_BATCH, extra_args=["--dtype", "bfloat16"],
        served_model_name="tiny", state_dir=tmp_path_factory.mktemp("replicas"),
        # Start speculating, so the first window measures acceptance and verify costs: the
        # startup calibration on two busy cores is too noisy to start from.
        speculation=SpeculationConfig(method="draft", k_max=K_MAX, schedule=constant_schedule(2)),
    ) as started:
        yield started


@pytest.fixture(scope="module")
def prometheus(replicas, tmp_path_factory):
    prom = LocalPrometheus(tmp_path_factory.mktemp("prometheus"), scrape_interval=1.0)
    prom.set_targets([ScrapeTarget(r.name, r.address) for r in replicas])
    with prom:
        yield prom


class StepKProbe:
    """Each replica's own /metrics counters since the probe was made."""

    def __init__(self, replicas) -> None:
        self.replicas = list(replicas)
        self._before = {r.name: self._snapshot(r) for r in self.replicas}

    @staticmethod
    def _snapshot(replica):
        return parse_exposition(httpx.get(f"{replica.base_url}/metrics", timeout=5).text)

    def windows(self) -> dict[str, ReplicaWindow]:
        return {r.name: to_window(*snapshot_delta(self._before[r.name], self._snapshot(r))) for r in self.replicas}


def zero_fraction(windows: dict[str, ReplicaWindow]) -> dict[str, float]:
    """Fraction of decode steps each replica ran at K = 0."""
    out = {}
    for name, window in windows.items():
        buckets = dict(window.step_k_histogram)
        total = buckets.get(float("inf"), 0.0)
        assert total > 0, f"{name} ran no decode steps"
        out[name] = buckets.get(0.0, 0.0) / total
    return out


def acceptance_rate(windows: dict[str, ReplicaWindow]) -> float:
    """Accepted / drafted tokens over all replicas."""
    accepted = sum(sum(w.accepted_per_pos) for w in windows.values())
    return accepted / sum(sum(w.draft_tokens_per_pos) for w in windows.values())


class Loop:
    """The controller ticking every TICK_S in the background, as `specfleet up` runs it."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.records: list[DecisionRecord] = []
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            self.records.append(await self.controller.tick())
            await asyncio.sleep(TICK_S)

    def __enter__(self) -> "Loop":
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    async def next_record(self) -> DecisionRecord:
        """The next tick's record; a tick that raised fails the test here instead of hanging it."""
        assert self._task is not None
        seen = len(self.records)
        while len(self.records) <= seen:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.1)
        return self.records[-1]


def k_at(backend: LocalBackend, name: str, batch: int) -> int:
    config = backend.applied(name)
    return 0 if config is None else config.k_for_batch(batch)


async def settle_speculating_at_batch_one(
    backend: LocalBackend, names: list[str], urls: list[str], prompts: list[str]
) -> LoadResult:
    """One stream per replica, 4 s at a time, until every replica's schedule has K > 0 at
    batch 1 or 45 s have passed (the caller asserts which): the loop re-learns every tick
    from noisy timings on shared cores, so it gets a few windows to settle."""
    load = LoadResult(started=time.perf_counter(), finished=time.perf_counter())
    deadline = time.monotonic() + 45.0
    while True:
        load = load.merge(await run_load(urls, 1, 4.0, model="tiny", prompts=prompts))
        if all(k_at(backend, n, 1) > 0 for n in names) or time.monotonic() > deadline:
            return load


async def test_controller_speculates_at_low_load_stops_at_high_load_and_holds_still_without_metrics(
    replicas, prometheus, prompts
) -> None:
    backend = LocalBackend(lambda: [Replica(r.name, r.base_url, r.admin_token, str(r.process.pid)) for r in replicas])
    settings = ControlSettings(
        mode="auto", method="draft", k_max=K_MAX, window_s=8.0,
        # Time runs ~20x faster here than in service (8 s windows, 3 s cooldown): so does the
        # decay of a replica's acceptance toward the prior while it does not draft.
        params=PolicyParams(
            k_max=K_MAX, max_batch=MAX_BATCH, min_gain=MIN_GAIN, cooldown_s=3.0, min_samples=4,
            decay_half_life_s=15.0,
        ),
    )
    controller = Controller(backend, PrometheusSource(prometheus.url), settings)
    urls = [r.base_url for r in replicas]
    names = [r.name for r in replicas]
    load = LoadResult(started=time.perf_counter(), finished=time.perf_counter())

    with Loop(controller) as loop:
        # (1) One stream per replica: a schedule with K > 0 at batch 1 goes out, steps run at K > 0.
        load = load.merge(await settle_speculating_at_batch_one(backend, names, urls, prompts))
        record = await loop.next_record()
        assert record.condition("MetricsAvailable").status == "True", record.conditions
        assert all(k_at(backend, n, 1) > 0 for n in names), [backend.applied(n) for n in names]
        probe = StepKProbe(replicas)
        load = load.merge(await run_load(urls, 1, 10.0, model="tiny", prompts=prompts))
        record = await loop.next_record()
        windows = probe.windows()
        zero = zero_fraction(windows)
        assert all(f < 0.5 for f in zero.values()), zero
        low_load_record, low_load_acceptance = record, acceptance_rate(windows)

        # (2) Concurrency >= 4x the break-even the controller computed for each replica:
        # K = 0 dominates (beyond MAX_BATCH streams queue, the decode batch stays full).
        # A low-load window measures batch 1 only, so a replica may not have located its
        # break-even yet (None: it looks like speculation pays up to MAX_BATCH); then the
        # full batch is the load, and the live timings at that batch must teach it K = 0.
        break_evens = {r.name: r.break_even for r in record.replicas}
        concurrency = [4 * (break_evens[n] or MAX_BATCH) for n in names]
        # Costs at this batch are re-learnt from live timings: two windows' worth, since one
        # noisy window on shared cores can still favour drafting.
        warm = await run_load(urls, concurrency, 16.0, model="tiny", max_tokens=24, prompts=prompts)
        probe = StepKProbe(replicas)
        high = await run_load(urls, concurrency, 12.0, model="tiny", max_tokens=24, prompts=prompts)
        zero = zero_fraction(probe.windows())
        assert all(f > 0.5 for f in zero.values()), (zero, [r.break_even for r in loop.records[-1].replicas])
        load = load.merge(warm).merge(high)

        # (3) Back to low load: speculation resumes. A replica that stopped drafting learns
        # nothing new about its acceptance, which decays back toward the prior: give it the
        # windows phase (1) had to turn speculation back on at batch 1.
        load = load.merge(await settle_speculating_at_batch_one(backend, names, urls, prompts))
        probe = StepKProbe(replicas)
        load = load.merge(await run_load(urls, 1, 10.0, model="tiny", prompts=prompts))
        zero = zero_fraction(probe.windows())
        assert all(f < 0.5 for f in zero.values()), zero
        assert load.failed == 0, load.errors[:3]
        assert load.completed > 0

        # (4) Prometheus stops: MetricsAvailable=False, nothing changes; back: decisions resume.
        prometheus.stop()
        await loop.next_record()  # a tick in flight at the stop may still have read it
        in_force = {n: backend.applied(n) for n in names}
        outage = [await loop.next_record() for _ in range(3)]
        for rec in outage:
            assert rec.condition("MetricsAvailable").status == "False"
            assert rec.condition("MetricsAvailable").reason == "PrometheusUnreachable"
        assert {n: backend.applied(n) for n in names} == in_force
        assert outage[-1].last_decision_time == outage[0].last_decision_time
        prometheus.start()
        deadline = time.monotonic() + 30
        while True:
            rec = await loop.next_record()
            if rec.condition("MetricsAvailable").status == "True" or time.monotonic() > deadline:
                break
        assert rec.condition("MetricsAvailable").status == "True", rec.conditions
        assert rec.last_decision_time is not None and rec.last_decision_time > outage[-1].time
        # The status reports the acceptance the replicas counted (over its own window, which
        # overlaps the probe's), and the trained draft agrees with the target far above chance.
        assert low_load_record.acceptance == pytest.approx(low_load_acceptance, abs=0.1)
        assert low_load_acceptance > 0.15
