#!/usr/bin/env python3
"""Batch-1 greedy tokens/s of our runtime with speculation off vs the bundled draft at
K=1..8, on the held-out prompts, side by side: each prompt runs under every setting back
to back (round robin), so machine noise spreads over all settings alike. Also checks
that every setting produced the same tokens (greedy speculation is lossless), and puts
beside the measurement the speedup that the engine's own forward-pass costs (its
calibration sweep) and the oracle's acceptance (models/acceptance.json) imply:
tokens_per_step(K) * T(1) / (K * D(1) + T(K+1)), engine overhead outside forwards excluded.

    .venv/bin/python scripts/bench_pair_cpu.py --out models/speed_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from specfleet.contract import MAX_SCHEDULE_BATCH, SpeculationConfig, SpeculationUpdate
from specfleet_runtime.engine.api import SamplingParams
from specfleet_runtime.engine.engine import Engine, EngineConfig

MODELS = Path(__file__).resolve().parent.parent / "models"
OFF = 0


def setting(k: int) -> SpeculationUpdate:
    if k == OFF:
        return SpeculationUpdate(enabled=False)
    return SpeculationUpdate(enabled=True, method="draft", schedule=[(1, MAX_SCHEDULE_BATCH, k)])


def forward_costs(engine: Engine, k_max: int) -> dict:
    """Per model, seconds of one forward pass of n tokens at batch 1, interpolated
    linearly between the calibration sweep's powers of two."""
    points: dict[str, dict[int, float]] = {"target": {}, "draft": {}}
    for t in engine.calibrate(max_seconds=60.0):
        points[t.model][t.tokens] = t.seconds

    def cost(model: str):
        xs = sorted(points[model])

        def at(n: int) -> float:
            lo = max(x for x in xs if x <= n)
            hi = min((x for x in xs if x >= n), default=lo)
            if hi == lo:
                return points[model][lo]
            w = (n - lo) / (hi - lo)
            return (1 - w) * points[model][lo] + w * points[model][hi]

        return at

    return {m: cost(m) for m in points}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", type=Path, default=MODELS / "pycode-target")
    p.add_argument("--draft", type=Path, default=MODELS / "pycode-draft")
    p.add_argument("--prompts", type=Path, default=MODELS / "heldout_prompts.jsonl")
    p.add_argument("--count", type=int, default=16, help="held-out prompts to use")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--k-max", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="bfloat16 runs oneDNN-prepacked weights where the CPU has bf16 dot products")
    p.add_argument("--acceptance", type=Path, default=MODELS / "acceptance.json")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    engine = Engine.from_config(
        EngineConfig(
            model_dir=args.target,
            draft_dir=args.draft,
            speculation=SpeculationConfig(enabled=False, k_max=args.k_max),
            max_batch=1,
            dtype=args.dtype,
        )
    )
    rows = [json.loads(line) for line in args.prompts.read_text().splitlines()][: args.count]
    prompts = [engine.tokenizer.encode(r["prompt"]) for r in rows]
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0)
    settings = [OFF, *range(1, args.k_max + 1)]
    seconds = {k: 0.0 for k in settings}
    tokens = {k: 0 for k in settings}
    mismatches = {k: 0 for k in settings}
    for k in settings:  # warm-up: first calls of each shape are slower
        engine.update_speculation(setting(k))
        engine.generate([prompts[0][:32]], SamplingParams(max_tokens=8, temperature=0.0))
    for prompt in prompts:
        reference = None
        for k in settings:
            engine.update_speculation(setting(k))
            start = time.perf_counter()
            out = engine.generate([prompt], params)[0]
            seconds[k] += time.perf_counter() - start
            tokens[k] += len(out)
            reference = out if reference is None else reference
            mismatches[k] += out != reference
    costs = forward_costs(engine, args.k_max)
    tokens_per_step = json.loads(args.acceptance.read_text())["tokens_per_verify_step"]
    implied = {
        k: tokens_per_step[str(k)] * costs["target"](1) / (k * costs["draft"](1) + costs["target"](k + 1))
        for k in settings[1:]
    }
    base = tokens[OFF] / seconds[OFF]
    table = [
        {
            "setting": "off" if k == OFF else f"K={k}",
            "tokens": tokens[k],
            "seconds": round(seconds[k], 2),
            "tokens_per_second": round(tokens[k] / seconds[k], 1),
            "speedup": round(tokens[k] / seconds[k] / base, 3),
            "outputs_differing_from_off": mismatches[k],
            "implied_speedup": None if k == OFF else round(implied[k], 3),
        }
        for k in settings
    ]
    result = {
        "command": " ".join(["scripts/bench_pair_cpu.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads, "torch": torch.__version__},
        "dtype": args.dtype,
        "batch": 1,
        "prompts": len(prompts),
        "max_tokens": args.max_tokens,
        "forward_ms": {m: {n: round(costs[m](n) * 1e3, 3) for n in (1, 2, 4, 8, 16)} for m in ("target", "draft")},
        "table": table,
        "best": max(table[1:], key=lambda r: r["speedup"]),
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print("forward ms (tokens: ms):", json.dumps(result["forward_ms"]))
    print(f"{'setting':>8} {'tok/s':>8} {'speedup':>8} {'implied':>8} {'differ':>7}")
    for r in table:
        print(f"{r['setting']:>8} {r['tokens_per_second']:>8} {r['speedup']:>8} {str(r['implied_speedup']):>8} {r['outputs_differing_from_off']:>7}")
    return result


if __name__ == "__main__":
    main()
