"""Random-weight Hugging Face model folders for tests (no hub: everything is built here).

A folder holds what a real checkpoint holds: config.json, model.safetensors (or shards),
generation_config.json, tokenizer.json (a byte-level BPE trained on Python's own sources),
tokenizer_config.json (with a chat template unless asked not to).
"""

from __future__ import annotations

import json
import shutil
import sysconfig
from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

EOS_TOKEN = "<|endoftext|>"
SPECIAL_TOKENS = [EOS_TOKEN, "<|im_start|>", "<|im_end|>"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")

# A ChatML-style template, the shape real tokenizer_config.json files carry.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Public text that ships with Python: the training corpus for the tiny tokenizer.
_CORPUS_MODULES = ("textwrap.py", "string.py", "shlex.py", "fnmatch.py", "this.py")


def corpus_text() -> str:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return "\n".join((stdlib / name).read_text(encoding="utf-8") for name in _CORPUS_MODULES)


def train_tokenizer(path: Path, vocab_size: int = 512) -> Path:
    """Write tokenizer.json: byte-level BPE (>= 259 ids), or a character-level vocabulary
    for tiny sizes (statistical tests want a vocabulary of a few dozen ids)."""
    path.mkdir(parents=True, exist_ok=True)
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        tokenizer = _char_tokenizer(vocab_size)
    else:
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator(corpus_text().splitlines(keepends=True), trainer=trainer)
    tokenizer.save(str(path / "tokenizer.json"))
    return path


def _char_tokenizer(vocab_size: int) -> Tokenizer:
    alphabet = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;!?()[]{}=+-*/"
    n_chars = vocab_size - len(SPECIAL_TOKENS) - 1
    if n_chars < 4:
        raise ValueError(f"vocab_size={vocab_size} is too small (need >= {len(SPECIAL_TOKENS) + 5})")
    chars = list(alphabet[:n_chars])
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    vocab["<unk>"] = len(vocab)
    for ch in chars:
        vocab[ch] = len(vocab)
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    return tokenizer


def _write_tokenizer_config(path: Path, chat_template: str | None) -> None:
    cfg: dict = {"eos_token": EOS_TOKEN, "bos_token": None, "model_max_length": 1 << 20}
    if chat_template is not None:
        cfg["chat_template"] = chat_template
    (path / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))


def make_random_model(
    path: Path,
    *,
    vocab_size: int = 512,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int | None = None,
    arch: Literal["llama", "qwen2"] = "llama",
    tie: bool = False,
    seed: int = 0,
    tokenizer_dir: Path | None = None,
    rope_scaling: dict | None = None,
    rope_theta: float = 10000.0,
    max_position_embeddings: int = 2048,
    head_dim: int | None = None,
    init_std: float = 0.2,
    max_shard_size: str | None = None,
    chat_template: str | None = CHAT_TEMPLATE,
) -> Path:
    """Write a random-weight model folder at `path` and return it.

    `init_std` defaults larger than transformers' 0.02 so the logits are peaked, like a
    trained model's: near-uniform logits would make every argmax a coin toss.
    `max_shard_size` (e.g. "20KB") writes sharded safetensors with an index file.
    """
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if tokenizer_dir is None:
        train_tokenizer(path, vocab_size)
        _write_tokenizer_config(path, chat_template)
    else:
        for name in TOKENIZER_FILES:
            if (Path(tokenizer_dir) / name).exists():
                shutil.copy(Path(tokenizer_dir) / name, path / name)
    eos_id = Tokenizer.from_file(str(path / "tokenizer.json")).token_to_id(EOS_TOKEN)

    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate or 2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie,
        initializer_range=init_std,
        eos_token_id=eos_id,
        bos_token_id=None,
        rope_parameters={"rope_theta": rope_theta, "rope_type": "default", **(rope_scaling or {})},
    )
    if head_dim is not None:
        common["head_dim"] = head_dim
    torch.manual_seed(seed)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    elif arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
        with torch.no_grad():  # transformers zero-inits biases; random ones test the bias path
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0.0, init_std)
    else:
        raise ValueError(f"unknown arch {arch!r}")
    with torch.no_grad():  # transformers inits norms to 1; random gains exercise the norm path
        for name, param in model.named_parameters():
            if "norm" in name:
                param.uniform_(0.5, 1.5)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(path, safe_serialization=True, **kwargs)
    return path


def make_random_pair(
    root: Path, *, vocab_size: int = 512, seed: int = 0, arch: Literal["llama", "qwen2"] = "llama"
) -> tuple[Path, Path]:
    """A target and a smaller draft sharing one tokenizer: `root/target`, `root/draft`.

    The draft is the target's first layer with the target's embeddings, final norm and
    head, so it agrees with the target often but not always, like a real distilled draft.
    """
    from safetensors.torch import load_file, save_file

    root = Path(root)
    target = make_random_model(root / "target", vocab_size=vocab_size, layers=3, hidden=64, seed=seed, arch=arch)
    draft = make_random_model(
        root / "draft", vocab_size=vocab_size, layers=1, hidden=64, seed=seed + 1, arch=arch, tokenizer_dir=target
    )
    target_weights = load_file(str(target / "model.safetensors"))
    draft_weights = load_file(str(draft / "model.safetensors"))
    for name in draft_weights:
        draft_weights[name] = target_weights[name].clone()
    save_file(draft_weights, str(draft / "model.safetensors"), metadata={"format": "pt"})
    return target, draft


def widen_mlp(source: Path, dest: Path, intermediate_size: int) -> Path:
    """A copy of the model folder `source` whose MLPs have `intermediate_size` channels,
    the new ones zero: silu(0) * 0 = 0 and their down-projection columns are zero, so the
    logits are exactly the source's while each token costs more compute. Tests use it to
    put a trained pair's verify pass in the compute-bound regime at a small batch."""
    from safetensors.torch import load_file, save_file

    config = json.loads((source / "config.json").read_text())
    extra = intermediate_size - config["intermediate_size"]
    if extra < 0:
        raise ValueError(f"intermediate_size {intermediate_size} < the source's {config['intermediate_size']}")
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(source.glob("*.safetensors")):
        tensors |= load_file(shard)
    for name, weight in tensors.items():
        if name.endswith(("mlp.gate_proj.weight", "mlp.up_proj.weight")):
            tensors[name] = torch.cat([weight, weight.new_zeros(extra, weight.shape[1])], dim=0)
        elif name.endswith("mlp.down_proj.weight"):
            tensors[name] = torch.cat([weight, weight.new_zeros(weight.shape[0], extra)], dim=1)
    dest.mkdir(parents=True, exist_ok=True)
    save_file({n: t.contiguous() for n, t in tensors.items()}, str(dest / "model.safetensors"), metadata={"format": "pt"})
    (dest / "config.json").write_text(json.dumps(config | {"intermediate_size": intermediate_size}, indent=2))
    for name in ("generation_config.json", *TOKENIZER_FILES):
        if (source / name).exists():
            shutil.copy(source / name, dest / name)
    return dest
