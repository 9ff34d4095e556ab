"""A SpeculativeDeployment file for a local fleet of a given model pair (tests only)."""

from __future__ import annotations

from pathlib import Path

import yaml


def write_fleet_cr(path: Path, pair: tuple[Path, Path], *, replicas: int = 2, mode: str = "auto",
                   interval: str = "2s", max_batch: int = 8, k: int | None = None) -> Path:
    target, draft = pair
    body = {
        "apiVersion": "specfleet.io/v1alpha1",
        "kind": "SpeculativeDeployment",
        "metadata": {"name": "tiny"},
        "spec": {
            "replicas": replicas,
            "model": {"name": "tiny", "source": f"file://{target}"},
            "speculation": {
                "mode": mode,
                "method": "draft",
                "draft": {"source": f"file://{draft}"},
                "kMax": 4,
                "control": {"interval": interval, "window": "30s", "cooldown": "2s"},
            },
            "resources": {"gpus": 0},
            "serving": {"maxBatch": max_batch, "maxModelLen": 512},
        },
    }
    if k is not None:
        body["spec"]["speculation"]["k"] = k
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path
