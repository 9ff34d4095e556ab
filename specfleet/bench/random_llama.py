"""Random-weight Llama folders from named configs, so a benchmark needs no downloaded weights.

Written straight with safetensors (no transformers): config.json, model.safetensors, and a
character-level tokenizer padded to the config's vocabulary, so ASCII prompts encode and
every id decodes.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

from pydantic import BaseModel

EOS_TOKEN = "</s>"


class LlamaShape(BaseModel):
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    dtype: str = "bfloat16"


# llama-1b is TinyLlama-1.1B's shape (DESIGN.md §7's reference point); llama-7b is
# Llama-2-7B's, where each kernel moves enough weight bytes that per-launch latency no
# longer hides the memory-bandwidth bound.
RANDOM_MODELS: dict[str, LlamaShape] = {
    "llama-1b": LlamaShape(hidden=2048, layers=22, heads=32, kv_heads=4, intermediate=5632, vocab=32000),
    "llama-7b": LlamaShape(hidden=4096, layers=32, heads=32, kv_heads=32, intermediate=11008, vocab=32000),
    "llama-tiny": LlamaShape(hidden=128, layers=2, heads=4, kv_heads=2, intermediate=256, vocab=512, dtype="float32"),
}


def config_json(shape: LlamaShape) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": shape.hidden,
        "intermediate_size": shape.intermediate,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "vocab_size": shape.vocab,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "eos_token_id": 0,
        "bos_token_id": None,
        "torch_dtype": shape.dtype,
    }


def write_tokenizer(path: Path, vocab: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    chars = [c for c in string.printable if c not in "\x0b\x0c"]
    tokens = [EOS_TOKEN, "<unk>", *chars]
    tokens += [f"<extra_{i}>" for i in range(vocab - len(tokens))]
    tokenizer = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(tokens)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens([EOS_TOKEN])
    tokenizer.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"eos_token": EOS_TOKEN, "bos_token": None}))


def write_random_llama(path: Path, shape: LlamaShape, *, seed: int = 0, device: str = "cpu") -> Path:
    """A Hugging Face Llama folder with N(0, 0.02) weights (norms 1).

    The EOS row of lm_head is zeroed so greedy decoding never ends a request early: a
    benchmark wants every request to produce exactly max_tokens.
    """
    import torch
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    dtype = getattr(torch, shape.dtype)
    gen = torch.Generator(device=device).manual_seed(seed)
    head_dim = shape.hidden // shape.heads

    def normal(*size: int) -> torch.Tensor:
        return (torch.randn(*size, generator=gen, device=device) * 0.02).to(dtype).cpu()

    weights = {"model.embed_tokens.weight": normal(shape.vocab, shape.hidden)}
    for i in range(shape.layers):
        p = f"model.layers.{i}."
        weights |= {
            p + "self_attn.q_proj.weight": normal(shape.heads * head_dim, shape.hidden),
            p + "self_attn.k_proj.weight": normal(shape.kv_heads * head_dim, shape.hidden),
            p + "self_attn.v_proj.weight": normal(shape.kv_heads * head_dim, shape.hidden),
            p + "self_attn.o_proj.weight": normal(shape.hidden, shape.heads * head_dim),
            p + "mlp.gate_proj.weight": normal(shape.intermediate, shape.hidden),
            p + "mlp.up_proj.weight": normal(shape.intermediate, shape.hidden),
            p + "mlp.down_proj.weight": normal(shape.hidden, shape.intermediate),
            p + "input_layernorm.weight": torch.ones(shape.hidden, dtype=dtype),
            p + "post_attention_layernorm.weight": torch.ones(shape.hidden, dtype=dtype),
        }
    weights["model.norm.weight"] = torch.ones(shape.hidden, dtype=dtype)
    lm_head = normal(shape.vocab, shape.hidden)
    lm_head[0] = 0  # EOS (id 0, see config_json)
    weights["lm_head.weight"] = lm_head
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(config_json(shape), indent=2))
    write_tokenizer(path, shape.vocab)
    return path


def safetensors_weight_bytes(model_dir: Path) -> int:
    """Bytes of tensor data in the folder's safetensors files (file size minus headers)."""
    total = 0
    for file in sorted(Path(model_dir).glob("*.safetensors")):
        with file.open("rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
        total += file.stat().st_size - 8 - header_len
    return total
