"""Hugging Face folders in bf16, sharded under the repo's 16 MiB per-file limit, plus a
tar split into parts small enough to come back from the GPU machine."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import torch
from transformers import GenerationConfig, PreTrainedModel

MAX_SHARD = "15MB"  # transformers reads MB as 10^6 bytes: 15 MB < 16 MiB


def save_model(model: PreTrainedModel, out_dir: Path, eos_id: int) -> None:
    model = model.to(torch.bfloat16)
    model.generation_config = GenerationConfig(bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id)
    model.save_pretrained(str(out_dir), max_shard_size=MAX_SHARD, safe_serialization=True)


def pack(src: Path, dest: Path, name: str, part_bytes: int = 15 * 2**20) -> list[Path]:
    """`src` as an uncompressed tar in parts `name.tar.00`, `.01`, ... (cat them to untar);
    each part is written to a temporary name first so a killed run never leaves a torn one."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(src), arcname=".")
    data = buf.getvalue()
    parts = []
    for i, lo in enumerate(range(0, len(data), part_bytes)):
        part = dest / f"{name}.tar.{i:02d}"
        tmp = part.with_suffix(part.suffix + ".tmp")
        tmp.write_bytes(data[lo : lo + part_bytes])
        tmp.rename(part)
        parts.append(part)
    return parts
