"""The chart ships the repository's CRDs unchanged, plus kopf's peering CRDs."""

from __future__ import annotations

import yaml

from chart_render import CHART
from k8s_tools import REPO

KOPF_PEERINGS = "kopf.dev_peerings.yaml"


def test_chart_crds_equal_the_repository_crds_byte_for_byte() -> None:
    repo_crds = sorted((REPO / "crds").glob("*.yaml"))
    assert repo_crds, "crds/ is empty: run `python -m specfleet_operator.crd`"
    for path in repo_crds:
        twin = CHART / "crds" / path.name
        assert twin.is_file(), f"charts/specfleet/crds/{path.name} is missing"
        assert twin.read_bytes() == path.read_bytes(), f"charts/specfleet/crds/{path.name} differs from crds/{path.name}"


def test_chart_crds_hold_nothing_else_but_kopf_peering() -> None:
    names = {p.name for p in (CHART / "crds").iterdir()}
    assert names == {p.name for p in (REPO / "crds").glob("*.yaml")} | {KOPF_PEERINGS}


def test_chart_ships_the_speculative_deployment_crd() -> None:
    crds = [doc for p in sorted((CHART / "crds").glob("*.yaml")) for doc in yaml.safe_load_all(p.read_text()) if doc]
    names = {c["metadata"]["name"] for c in crds}
    assert names == {"speculativedeployments.specfleet.io", "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}
    (sdep,) = [c for c in crds if c["spec"]["group"] == "specfleet.io"]
    assert sdep["spec"]["names"]["kind"] == "SpeculativeDeployment"
    assert set(sdep["spec"]["names"]["shortNames"]) == {"specdeploy", "sdep"}
