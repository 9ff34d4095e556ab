"""The shipped pair: loadable by transformers and by our runtime, within the repo's size
limits, the draft a true draft of the target (same vocabulary, <= 1/8 of its parameters),
and our runtime's greedy output identical to transformers' on held-out prompts."""

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from specfleet.contract import MAX_SCHEDULE_BATCH, SpeculationConfig
from specfleet.model_sources import resolve_local_model
from specfleet_runtime.engine.api import SamplingParams
from specfleet_runtime.engine.engine import Engine, EngineConfig

MiB = 2**20
NAMES = ("pycode-target", "pycode-draft")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def hf_model(path: Path) -> LlamaForCausalLM:
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()


def test_bundled_names_resolve_to_the_shipped_folders(models_dir):
    for name in NAMES:
        assert resolve_local_model(f"bundled://{name}") == models_dir / name


@pytest.mark.parametrize("name", NAMES)
def test_each_model_is_a_complete_hf_llama_folder(models_dir, name):
    folder = models_dir / name
    for required in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (folder / required).is_file(), required
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["model_type"] == "llama"
    assert 1024 <= config["max_position_embeddings"] <= 2048
    assert isinstance(hf_model(folder), LlamaForCausalLM)


def test_draft_and_target_share_one_tokenizer(models_dir):
    target = Tokenizer.from_file(str(models_dir / "pycode-target" / "tokenizer.json"))
    draft = Tokenizer.from_file(str(models_dir / "pycode-draft" / "tokenizer.json"))
    assert target.get_vocab() == draft.get_vocab()
    assert 4096 <= target.get_vocab_size() <= 8192
    configs = [json.loads((models_dir / n / "config.json").read_text()) for n in NAMES]
    assert configs[0]["vocab_size"] == configs[1]["vocab_size"] == target.get_vocab_size()


def test_draft_has_at_most_an_eighth_of_the_targets_parameters(models_dir):
    target, draft = (hf_model(models_dir / n).num_parameters() for n in NAMES)
    assert 8_000_000 <= target <= 12_000_000
    assert draft * 8 <= target


def test_weight_files_fit_the_repo_limits(models_dir):
    shards = [f for n in NAMES for f in (models_dir / n).glob("*.safetensors")]
    assert shards
    assert all(f.stat().st_size <= 16 * MiB for f in shards)
    assert sum(f.stat().st_size for f in shards) <= 30_000_000
    for f in shards:  # half precision on disk; the runtime upcasts
        header_len = int.from_bytes(f.read_bytes()[:8], "little")
        header = json.loads(f.read_bytes()[8 : 8 + header_len])
        assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"BF16"}


def test_heldout_prompts_come_from_files_outside_the_training_split(models_dir, heldout_prompts):
    import gzip

    with gzip.open(models_dir / "corpus_manifest.jsonl.gz", "rt") as fh:
        splits = {row["path"]: row["split"] for row in map(json.loads, list(fh)[1:])}
    assert len(heldout_prompts) >= 32
    assert {splits[p["source"]] for p in heldout_prompts} == {"test"}


@pytest.fixture(scope="module")
def runtime_pair(models_dir):
    spec = SpeculationConfig(enabled=True, method="draft", k_max=8, schedule=[(1, MAX_SCHEDULE_BATCH, 4)])
    return Engine.from_config(
        EngineConfig(model_dir=models_dir / NAMES[0], draft_dir=models_dir / NAMES[1], speculation=spec, max_batch=2)
    )


def hf_greedy(model: LlamaForCausalLM, prompt: list[int], n: int) -> list[int]:
    out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False)
    return out[0, len(prompt) :].tolist()


@pytest.mark.parametrize("index", [0, 1])
def test_runtime_greedy_32_tokens_equal_transformers_for_target_and_draft(models_dir, heldout_prompts, index):
    tok = Tokenizer.from_file(str(models_dir / NAMES[0] / "tokenizer.json"))
    text = heldout_prompts[index]["prompt"]
    prompt = tok.encode(text).ids
    params = SamplingParams(max_tokens=32, temperature=0.0)
    for name in NAMES:
        engine = Engine.from_config(EngineConfig(model_dir=models_dir / name, max_batch=1))
        assert engine.tokenizer.encode(text) == prompt
        ours = engine.generate([prompt], params)[0]
        assert len(ours) == 32, f"{name} stopped after {len(ours)} tokens"
        assert ours == hf_greedy(hf_model(models_dir / name), prompt, 32), name


@pytest.mark.parametrize("index", [2, 3])
def test_speculating_with_the_real_draft_changes_no_greedy_token(models_dir, heldout_prompts, runtime_pair, index):
    prompt = runtime_pair.tokenizer.encode(heldout_prompts[index]["prompt"])
    params = SamplingParams(max_tokens=32, temperature=0.0)
    speculative = runtime_pair.generate([prompt], params)[0]
    assert len(speculative) == 32
    assert speculative == hf_greedy(hf_model(models_dir / NAMES[0]), prompt, 32)
