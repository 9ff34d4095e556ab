"""Load a Hugging Face model folder (config.json + *.safetensors, sharded or not) into our model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open

from .model import ModelConfig, Transformer

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(ValueError):
    """The folder is not a loadable Llama-family checkpoint; the message says why."""


def read_config(model_dir: Path) -> dict:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{model_dir}: no config.json")
    return json.loads(path.read_text())


def safetensors_files(model_dir: Path) -> list[Path]:
    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [model_dir / n for n in names]
    else:
        files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{model_dir}: no *.safetensors weights")
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise ModelLoadError(f"{model_dir}: index names missing shards {missing}")
    return files


def count_tensors(model_dir: Path) -> int:
    """Tensors in the checkpoint (reads only the safetensors headers), for progress totals."""
    total = 0
    for f in safetensors_files(model_dir):
        with safe_open(str(f), framework="pt", device="cpu") as handle:
            total += len(handle.keys())
    return total


_FUSED = {
    "self_attn.qkv_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "mlp.gate_up_proj": ("mlp.gate_proj", "mlp.up_proj"),
}


def fuse_projections(tensors: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """transformers' separate q/k/v and gate/up weights (and biases) -> our fused ones."""
    out = dict(tensors)
    for i in range(num_layers):
        for fused, parts in _FUSED.items():
            for kind in ("weight", "bias"):
                names = [f"layers.{i}.{p}.{kind}" for p in parts]
                present = [n for n in names if n in out]
                if not present:
                    continue
                if len(present) != len(names):
                    raise ModelLoadError(f"layer {i}: {kind} for only some of {', '.join(parts)}")
                out[f"layers.{i}.{fused}.{kind}"] = torch.cat([out.pop(n) for n in names])
    return out


def load_model(
    model_dir: Path,
    *,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> Transformer:
    """Build the model from `model_dir` with weights in `dtype` on `device`.

    `progress(done, total)` is called after each tensor, for a loading bar.
    """
    torch_dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    cfg = ModelConfig.from_hf(read_config(model_dir))
    with torch.device("meta"):
        model = Transformer(cfg)
    expected = dict(model.named_parameters())
    tensors: dict[str, torch.Tensor] = {}
    names = []
    handles = [safe_open(str(f), framework="pt", device="cpu") for f in safetensors_files(model_dir)]
    for handle in handles:
        names.extend((handle, n) for n in handle.keys())
    for done, (handle, hf_name) in enumerate(names, 1):
        if not hf_name.endswith("rotary_emb.inv_freq"):
            tensors[hf_name.removeprefix("model.")] = handle.get_tensor(hf_name).to(device=device, dtype=torch_dtype)
        if progress is not None:
            progress(done, len(names))
    tensors = fuse_projections(tensors, cfg.num_layers)
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise ModelLoadError(f"{model_dir}: unexpected tensors {unexpected[:5]}")
    if cfg.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)
    elif "lm_head.weight" not in tensors and "embed_tokens.weight" in tensors:
        raise ModelLoadError(f"{model_dir}: lm_head.weight missing and tie_word_embeddings is false")
    missing = sorted(n for n in expected if n not in tensors and not (cfg.tie_word_embeddings and n == "lm_head.weight"))
    if missing:
        raise ModelLoadError(f"{model_dir}: missing tensors {missing[:5]}{'...' if len(missing) > 5 else ''}")
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise ModelLoadError(f"{model_dir}: {name} has shape {tuple(tensor.shape)}, config implies {tuple(expected[name].shape)}")
    model.load_state_dict(tensors, strict=False, assign=True)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    return model.eval().requires_grad_(False)
