"""How a model source becomes something the runtime container can read.

bundled:// is baked into the runtime image (it sets SPECFLEET_MODELS_DIR), pvc:// mounts the
claim read-only, file:// mounts a hostPath read-only, and hf:// is downloaded by an init
container into an emptyDir before the server starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from specfleet.model_sources import BUNDLED_SCHEME, FILE_SCHEME

Role = Literal["target", "draft"]
MODELS_ROOT = "/models"
HF_SCHEME = "hf://"
PVC_SCHEME = "pvc://"
# huggingface_hub ships with tokenizers in the runtime image; argv keeps the source out of code.
HF_DOWNLOAD = (
    "import sys; from huggingface_hub import snapshot_download; "
    "snapshot_download(repo_id=sys.argv[1], revision=sys.argv[2] or None, local_dir=sys.argv[3])"
)


@dataclass
class ModelMount:
    path: str  # what `specfleet serve --model/--draft` receives
    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    init_containers: list[dict[str, Any]] = field(default_factory=list)


def model_mount(source: str, role: Role, init_template: dict[str, Any]) -> ModelMount:
    """Volumes, mounts and init containers for one model; init_template is a container stub."""
    volume = f"{role}-model"
    root = f"{MODELS_ROOT}/{role}"
    if source.startswith(BUNDLED_SCHEME):
        return ModelMount(path=source)
    if source.startswith(FILE_SCHEME):
        host_path = source.removeprefix(FILE_SCHEME)
        return ModelMount(
            path=root,
            volumes=[{"name": volume, "hostPath": {"path": host_path, "type": "Directory"}}],
            mounts=[{"name": volume, "mountPath": root, "readOnly": True}],
        )
    if source.startswith(PVC_SCHEME):
        claim, _, sub_path = source.removeprefix(PVC_SCHEME).partition("/")
        return ModelMount(
            path=f"{root}/{sub_path}".rstrip("/"),
            volumes=[{"name": volume, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}],
            mounts=[{"name": volume, "mountPath": root, "readOnly": True}],
        )
    if source.startswith(HF_SCHEME):
        repo, _, revision = source.removeprefix(HF_SCHEME).partition("@")
        fetch = init_template | {
            "name": f"fetch-{role}-model",
            "command": ["python", "-c", HF_DOWNLOAD, repo, revision, root],
            "volumeMounts": init_template.get("volumeMounts", []) + [{"name": volume, "mountPath": root}],
        }
        return ModelMount(
            path=root,
            volumes=[{"name": volume, "emptyDir": {}}],
            mounts=[{"name": volume, "mountPath": root, "readOnly": True}],
            init_containers=[fetch],
        )
    raise ValueError(f"unsupported model source {source!r}")
