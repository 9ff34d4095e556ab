#!/usr/bin/env python3
"""Greedy per-position acceptance of the bundled draft against the bundled target, with
transformers running both models in float32 (the oracle, not our runtime), on the
held-out prompts that the training run wrote.

    .venv/bin/python scripts/measure_acceptance.py --out models/acceptance.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pycode_pair import acceptance, prompts  # noqa: E402

MODELS = Path(__file__).resolve().parent.parent / "models"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", type=Path, default=MODELS / "pycode-target")
    p.add_argument("--draft", type=Path, default=MODELS / "pycode-draft")
    p.add_argument("--prompts", type=Path, default=MODELS / "heldout_prompts.jsonl")
    p.add_argument("--limit", type=int, help="use the first N prompts only")
    p.add_argument("--positions", type=int, default=32)
    p.add_argument("--k-max", type=int, default=8)
    p.add_argument("--samples", type=int, default=2, help="continuations to print")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    tok = Tokenizer.from_file(str(args.target / "tokenizer.json"))
    if tok.get_vocab() != Tokenizer.from_file(str(args.draft / "tokenizer.json")).get_vocab():
        raise SystemExit("draft and target tokenizers differ")
    rows = prompts.read_jsonl(args.prompts)[: args.limit]
    ids = [tok.encode(r["prompt"]).ids for r in rows]
    target = AutoModelForCausalLM.from_pretrained(str(args.target), dtype=torch.float32).eval()
    draft = AutoModelForCausalLM.from_pretrained(str(args.draft), dtype=torch.float32).eval()
    pad = tok.token_to_id("<|endoftext|>")
    start = time.perf_counter()
    acc, refs = acceptance.measure(target, draft, ids, args.positions, args.k_max, pad, batch=32)
    result = {
        "command": " ".join(["scripts/measure_acceptance.py", *(sys.argv[1:] if argv is None else argv)]),
        "oracle": "transformers, float32, CPU",
        "prompts": len(rows),
        "positions_per_prompt": args.positions,
        "seconds": round(time.perf_counter() - start, 1),
        **acc.as_dict(),
        "samples": [
            {"source": rows[i]["source"], "prompt": rows[i]["prompt"], "target_continuation": tok.decode(refs[i], skip_special_tokens=False)}
            for i in range(min(args.samples, len(rows)))
        ],
    }
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main()
