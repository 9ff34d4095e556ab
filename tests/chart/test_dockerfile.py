"""The Dockerfile: hadolint-clean, and its targets are what the chart and operator expect.

No container engine runs here, so the image is checked by linting (the real hadolint) and
by reading the Dockerfile's instructions.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field

import pytest
import yaml

from chart_render import CHART, parse_operator_args
from k8s_tools import HADOLINT, REPO, run, tool

from specfleet.model_sources import MODELS_DIR_ENV

DOCKERFILE = REPO / "Dockerfile"


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [a for k, a in self.instructions if k == keyword]


def parse(text: str) -> tuple[dict[str, str], dict[str, Stage]]:
    """Global ARG defaults and the stages by name, from Dockerfile text (continuations
    joined, comments and parser directives dropped)."""
    logical, buf = [], ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in logical:
        keyword, _, rest = line.strip().partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            base, _, name = re.sub(r"\s+as\s+", " AS ", rest.strip(), flags=re.I).partition(" AS ")
            current = stages[name.strip()] = Stage(base.strip(), name.strip())
        elif current is None:
            assert keyword == "ARG", f"only ARG may precede the first FROM, got {line!r}"
            name, _, default = rest.partition("=")
            global_args[name.strip()] = default.strip()
        else:
            current.instructions.append((keyword, rest.strip()))
    return global_args, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], dict[str, Stage]]:
    return parse(DOCKERFILE.read_text())


def test_hadolint_finds_nothing_at_its_strictest() -> None:
    proc = run(HADOLINT, "--failure-threshold", "style", "--format", "json", str(DOCKERFILE), check=False)
    assert proc.returncode == 0 and json.loads(proc.stdout) == [], proc.stdout + proc.stderr


def test_hadolint_would_catch_an_unpinned_install() -> None:
    """The lint above is live: the same Dockerfile plus an unpinned pip install fails it."""
    broken = DOCKERFILE.read_text() + "RUN pip install --no-cache-dir requests\n"
    proc = subprocess.run([tool(HADOLINT), "--format", "json", "-"], input=broken, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "DL3013" in {finding["code"] for finding in json.loads(proc.stdout)}


@pytest.mark.parametrize("target", ["operator", "runtime-cpu", "runtime-cuda"])
def test_targets_run_specfleet_as_a_numeric_non_root_user(dockerfile, target: str) -> None:
    _, stages = dockerfile
    stage = stages[target]
    user = stage.args("USER")[-1]
    assert re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", user), f"{target} runs as {user!r}"
    assert json.loads(stage.args("ENTRYPOINT")[-1]) == ["specfleet"]


def test_images_are_multi_stage_and_build_from_pinned_bases(dockerfile) -> None:
    args, stages = dockerfile
    assert len(stages) >= 4
    python_image, cuda_image = args["PYTHON_IMAGE"], args["CUDA_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", python_image), python_image
    assert cuda_image.startswith("nvidia/cuda:") and re.search(r":\d+\.\d+\.\d+-", cuda_image), cuda_image
    assert stages["operator"].base == stages["runtime-cpu"].base == "${PYTHON_IMAGE}"
    assert stages["runtime-cuda"].base == "${CUDA_IMAGE}"


def chain(stages: dict[str, Stage], target: str) -> list[Stage]:
    """The target and every stage it copies from, transitively."""
    seen, todo = [], [target]
    while todo:
        stage = stages[todo.pop()]
        seen.append(stage)
        todo += [m.group(1) for c in stage.args("COPY") if (m := re.match(r"--from=(\S+)", c)) and m.group(1) in stages]
    return seen


def test_operator_image_installs_only_the_base_dependencies(dockerfile) -> None:
    _, stages = dockerfile
    runs = " ".join(r for stage in chain(stages, "operator") for r in stage.args("RUN"))
    assert "pip install" in runs
    assert "torch" not in runs.replace("'torch' not in sys.modules", "")
    assert "[runtime]" not in runs and "cuda" not in runs.lower()


@pytest.mark.parametrize("target", ["runtime-cpu", "runtime-cuda"])
def test_runtime_images_carry_torch_the_runtime_extra_and_the_bundled_models(dockerfile, target: str) -> None:
    args, stages = dockerfile
    stage = stages[target]
    runs = " ".join(r for s in chain(stages, target) for r in s.args("RUN"))
    assert '"torch==${TORCH_VERSION}"' in runs and "[runtime]" in runs
    index = "${TORCH_CPU_INDEX}" if target == "runtime-cpu" else "${TORCH_CUDA_INDEX}"
    assert index in runs
    assert "COPY models /opt/specfleet/models" in [f"COPY {c}" for c in stage.args("COPY")]
    assert f"{MODELS_DIR_ENV}=/opt/specfleet/models" in " ".join(stage.args("ENV"))


def test_dockerignore_admits_every_copied_source(dockerfile) -> None:
    _, stages = dockerfile
    allowed = {line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines() if line.startswith("!")}
    for stage in stages.values():
        for copy in stage.args("COPY"):
            if copy.startswith("--from="):
                continue
            *sources, _dest = copy.split()
            for source in sources:
                assert source in allowed, f"COPY {source} is excluded by .dockerignore"
                assert (REPO / source).exists(), f"COPY {source}: no such path in the repository"


def test_chart_runs_the_operator_as_the_images_user(dockerfile) -> None:
    _, stages = dockerfile
    uid, _, gid = stages["operator"].args("USER")[-1].partition(":")
    pod = yaml.safe_load((CHART / "values.yaml").read_text())["podSecurityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"]) == (int(uid), int(gid or uid))
    assert pod["runAsNonRoot"] is True


def test_operator_image_default_command_is_one_the_cli_accepts(dockerfile) -> None:
    _, stages = dockerfile
    params = parse_operator_args(json.loads(stages["operator"].args("CMD")[-1]))
    assert params["all_namespaces"] is True
    assert params["liveness"] == "http://0.0.0.0:8080/healthz"
