"""Render charts/specfleet with the real helm and read what the rendered RBAC grants.

Other tests may import this (tests/chart is on sys.path when pytest collects it):
`render()` gives the objects `helm template` prints, `Grants.of(objects)` what the
rendered Roles/ClusterRoles allow the operator's ServiceAccount, and `allows()` answers
one API call; `parse_operator_args(kubelet_expand(container(objects), ...))` reads the
operator's command line as the pod would run it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import typer
import yaml

from k8s_tools import HELM, REPO, run

from specfleet import cli

CHART = REPO / "charts" / "specfleet"
ALL_ON = Path(__file__).resolve().parent / "values-all-on.yaml"
RELEASE = "sf"
NAMESPACE = "specfleet-system"
# name -> values file (None: the chart's defaults). Between them they cover cluster-wide
# and namespaced RBAC, and every optional object.
VALUE_SETS: dict[str, Path | None] = {"default": None, "all-on": ALL_ON}


def helm_args(values: Path | None, sets: tuple[str, ...]) -> list[str]:
    args = ["-f", str(values)] if values else []
    for s in sets:
        args += ["--set", s]
    return args


@cache
def _template(args: tuple[str, ...]) -> str:
    # helm template is a pure function of the chart and its arguments; a session renders
    # each combination once (the chart does not change while tests run).
    return run(HELM, *args).stdout


def render(values: Path | None = None, *sets: str, include_crds: bool = True) -> list[dict[str, Any]]:
    """The objects of `helm template` (CRDs from crds/ included unless told otherwise),
    freshly parsed, so callers may change them."""
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, *helm_args(values, sets)]
    if include_crds:
        args.append("--include-crds")
    return [doc for doc in yaml.safe_load_all(_template(tuple(args))) if doc]


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (c,) = one(objects, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    return c


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


@dataclass(frozen=True)
class Grant:
    group: str
    resource: str  # "pods", "speculativedeployments/status", ...
    verb: str
    namespace: str | None  # None: every namespace (a ClusterRole bound cluster-wide)


@dataclass(frozen=True)
class Grants:
    grants: frozenset[Grant]

    @classmethod
    def of(cls, objects: list[dict[str, Any]], service_account: str | None = None) -> Grants:
        """What the bindings in `objects` give the operator's ServiceAccount (by default the
        one the chart creates). RoleBindings to ClusterRoles count in their namespace."""
        sa = service_account or one(objects, "ServiceAccount")["metadata"]["name"]
        roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
                 for o in objects if o["kind"] in ("Role", "ClusterRole")}
        out: set[Grant] = set()
        for binding in objects:
            if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
                continue
            if not any(s["kind"] == "ServiceAccount" and s["name"] == sa for s in binding["subjects"]):
                continue
            ref = binding["roleRef"]
            ns = binding["metadata"].get("namespace") if binding["kind"] == "RoleBinding" else None
            role_ns = ns if ref["kind"] == "Role" else None
            role = roles.get((ref["kind"], role_ns, ref["name"]))
            assert role is not None, f"{binding['kind']} {binding['metadata']['name']} refers to a missing {ref}"
            for rule in role["rules"]:
                assert "resourceNames" not in rule, "narrowing by resourceNames is not modelled here"
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        for verb in rule["verbs"]:
                            out.add(Grant(group, resource, verb, ns))
        return cls(frozenset(out))

    def allows(self, group: str, resource: str, verb: str, namespace: str | None) -> bool:
        """Whether one API call is granted; namespace None asks for a cluster-wide grant
        (cluster-scoped resources, or list/watch across all namespaces)."""
        return any(
            g.group == group and g.resource == resource and g.verb == verb
            and (g.namespace is None or g.namespace == namespace)
            for g in self.grants
        )


def kubelet_expand(c: dict[str, Any], fields: dict[str, str]) -> list[str]:
    """The container's args after the kubelet's $(VAR) expansion, with the downward-API
    env vars set to `fields`; a reference to an undefined variable is an error here."""
    env = {e["name"]: e.get("value") for e in c.get("env", [])} | fields
    def sub(m: re.Match[str]) -> str:
        assert env.get(m.group(1)) is not None, f"{m.group(0)} names no env var with a value"
        return env[m.group(1)]
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", sub, a) for a in c["args"]]


def parse_operator_args(args: list[str]) -> dict[str, Any]:
    """Parse the rendered command line with the real `specfleet` CLI (no run): unknown
    flags or bad values fail here as they would in the pod."""
    name, *rest = args
    command = typer.main.get_command(cli.load_subcommand(name))
    return command.make_context(f"specfleet {name}", rest, resilient_parsing=False).params
