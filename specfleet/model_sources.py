"""Where a model source string points on this machine or in the runtime image.

`bundled://NAME` names a model shipped with specfleet (the repo's models/ folder, or
$SPECFLEET_MODELS_DIR, which the runtime image sets), so one CR file works both with
`specfleet up` and on a cluster. `file:///abs/path` and plain paths are local folders.
"""

from __future__ import annotations

import os
from pathlib import Path

BUNDLED_SCHEME = "bundled://"
FILE_SCHEME = "file://"
MODELS_DIR_ENV = "SPECFLEET_MODELS_DIR"
REPO_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def bundled_models_dir() -> Path:
    return Path(os.environ.get(MODELS_DIR_ENV, REPO_MODELS_DIR))


def resolve_local_model(source: str) -> Path:
    """The folder a `bundled://`, `file://` or plain-path source names; ValueError otherwise."""
    if source.startswith(BUNDLED_SCHEME):
        name = source.removeprefix(BUNDLED_SCHEME).strip("/")
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"bad bundled model name in {source!r}")
        path = bundled_models_dir() / name
    elif source.startswith(FILE_SCHEME):
        path = Path(source.removeprefix(FILE_SCHEME))
    elif "://" in source:
        raise ValueError(f"{source!r} is not a local model source (bundled://, file:// or a path)")
    else:
        path = Path(source)
    if not (path / "config.json").is_file():
        raise ValueError(f"model source {source!r}: no config.json in {path}")
    return path
