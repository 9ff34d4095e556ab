"""The whole recipe at toy size on a CPU: one command yields a pair that transformers
and our runtime load, with the manifest, prompts and metrics beside it."""

import gzip
import json
import sysconfig
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import train_model_pair
from specfleet_runtime.engine.api import SamplingParams
from specfleet_runtime.engine.engine import Engine, EngineConfig


@pytest.mark.slow
def test_one_command_trains_a_loadable_pair_with_its_records(tmp_path: Path):
    torch.set_num_threads(1)
    source = Path(sysconfig.get_paths()["stdlib"]) / "email"
    out = tmp_path / "out"
    pack = tmp_path / "pack"
    metrics = train_model_pair.main([
        "--out", str(out), "--pack-dir", str(pack), "--source-root", str(source), "--device", "cpu",
        "--tiny", "--vocab", "512", "--test-percent", "25", "--batch", "4", "--seq-len", "32",
        "--target-steps", "6", "--draft-steps", "6", "--warmup-steps", "2", "--log-every", "3",
        "--prompts", "2", "--positions", "3", "--k-max", "3", "--eval-windows", "4",
    ])
    assert metrics["target"]["steps"] == metrics["draft"]["steps"] == 6
    assert metrics["corpus"]["test_files"] > 0 and metrics["corpus"]["train_files"] > 0
    assert set(metrics["acceptance"]["p_accept_at_least"]) == {"1", "2", "3"}
    assert json.loads((out / "training_metrics.json").read_text())["seed"] == 0

    with gzip.open(out / "corpus_manifest.jsonl.gz", "rt") as fh:
        manifest = [json.loads(line) for line in fh][1:]
    assert sum(r["split"] == "test" for r in manifest) == metrics["corpus"]["test_files"]
    assert sorted(p.name for p in pack.iterdir()) == ["heldout_prompts.jsonl", "pair.tar.00", "training_metrics.json"]

    prompt = [5, 17, 42, 99]
    for name in ("pycode-target", "pycode-draft"):
        hf = AutoModelForCausalLM.from_pretrained(str(out / name), dtype=torch.float32).eval()
        ours = Engine.from_config(EngineConfig(model_dir=out / name)).generate(
            [prompt], SamplingParams(max_tokens=8, temperature=0.0)
        )[0]
        theirs = hf.generate(torch.tensor([prompt]), max_new_tokens=len(ours), do_sample=False)[0, 4:].tolist()
        assert ours == theirs[: len(ours)] and ours
