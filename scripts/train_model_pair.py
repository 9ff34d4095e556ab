#!/usr/bin/env python3
"""Train specfleet's bundled Python-code model pair in one command (one GPU, ~8 minutes).

    python3 scripts/train_model_pair.py --out models

builds the corpus from this interpreter's stdlib and site-packages, trains the tokenizer,
the target, and the draft distilled from it, then writes `pycode-target/`, `pycode-draft/`,
`corpus_manifest.jsonl.gz`, `heldout_prompts.jsonl` and `training_metrics.json` into --out.
Training stops on wall-clock budgets by default; `--target-steps/--draft-steps` replay the
step counts recorded in training_metrics.json instead.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import torch
import transformers
from transformers import AutoModelForCausalLM, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pycode_pair import acceptance, architecture, corpus, export, prompts, tokenizer, training  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--pack-dir", type=Path, help="after each model, also pack --out as tar parts here")
    p.add_argument("--source-root", type=Path, action="append", help="corpus folder instead of stdlib + site-packages (repeatable)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-corpus-mb", type=float, default=80)
    p.add_argument("--tokenizer-corpus-mb", type=float, default=25)
    p.add_argument("--test-percent", type=int, default=2)
    p.add_argument("--vocab", type=int, default=6144)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--target-seconds", type=float, default=240)
    p.add_argument("--draft-seconds", type=float, default=150)
    p.add_argument("--target-steps", type=int)
    p.add_argument("--draft-steps", type=int)
    p.add_argument("--target-lr", type=float, default=2e-3)
    p.add_argument("--draft-lr", type=float, default=3e-3)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--positions", type=int, default=32, help="acceptance positions per prompt")
    p.add_argument("--k-max", type=int, default=8)
    p.add_argument("--eval-windows", type=int, default=200)
    p.add_argument("--tiny", action="store_true", help="toy shapes for a CPU smoke run")
    return p.parse_args(argv)


def encode_stream(tok, texts: list[str], eos_id: int) -> torch.Tensor:
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
    ids: list[int] = []
    for enc in encode(texts):
        ids.extend(enc.ids)
        ids.append(eos_id)
    return torch.tensor(ids, dtype=torch.int32)


def model_report(shape, params: int, log, loss_name: str, heldout_ce: float) -> dict:
    """One model's entry in training_metrics.json."""
    return {
        "shape": shape.__dict__,
        "params": params,
        "steps": log.steps,
        "seconds": round(log.seconds, 1),
        "tokens": log.tokens,
        loss_name: round(log.final_loss(), 4),
        "heldout_ce": round(heldout_ce, 4),
        "heldout_ppl": round(math.exp(heldout_ce), 3),
        "history": log.history,
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    t0 = time.perf_counter()
    phases: dict[str, float] = {}

    def phase(name: str) -> None:
        phases[name] = round(time.perf_counter() - t0 - sum(phases.values()), 2)
        print(f"== {name} done, {phases[name]} s (total {time.perf_counter() - t0:.1f} s)", flush=True)

    random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.pack_dir:
        args.pack_dir.mkdir(parents=True, exist_ok=True)
    target_dir, draft_dir = out / "pycode-target", out / "pycode-draft"

    roots = {f"root{i}": str(r) for i, r in enumerate(args.source_root)} if args.source_root else corpus.python_roots()
    corp = corpus.build_corpus(roots, int(args.max_corpus_mb * 1e6), args.test_percent)
    corpus.write_manifest(corp, out / "corpus_manifest.jsonl.gz")
    stats = corpus.corpus_stats(corp)
    print("corpus", json.dumps(stats), flush=True)
    train_files, test_files = corp.split("train"), corp.split("test")
    phase("corpus")

    tok_texts, size = [], 0
    for f in train_files:
        if size >= args.tokenizer_corpus_mb * 1e6:
            break
        tok_texts.append(f.text)
        size += len(f.text)
    tok = tokenizer.train_tokenizer(tok_texts, args.vocab)
    eos_id = tok.token_to_id(tokenizer.EOS)
    vocab = tok.get_vocab_size()
    phase("tokenizer")

    train_stream = encode_stream(tok, [f.text for f in train_files], eos_id)
    test_stream = encode_stream(tok, [f.text for f in test_files], eos_id)
    stats |= {"train_tokens": train_stream.numel(), "test_tokens": test_stream.numel()}
    print(f"tokens: train {train_stream.numel()} test {test_stream.numel()}", flush=True)
    train_stream = train_stream.to(device)
    phase("encode")

    tshape, dshape = architecture.TARGET, architecture.DRAFT
    if args.tiny:
        tshape, dshape = architecture.Shape(64, 2, 2, 128), architecture.Shape(32, 1, 1, 64)
    target = LlamaForCausalLM(architecture.llama_config(tshape, vocab, eos_id)).to(device)
    sampler = training.WindowSampler(train_stream, args.batch, args.seq_len, seed=args.seed + 1)
    tlog = training.train_target(
        target,
        sampler,
        training.Budget(args.target_seconds, args.target_steps),
        training.Optim(args.target_lr, warmup_steps=args.warmup_steps),
        args.log_every,
    )
    export.save_model(target, target_dir, eos_id)  # rounds the target to bf16 in place
    tokenizer.save_tokenizer(tok, target_dir, architecture.MAX_POSITIONS)
    phase("target")
    if args.pack_dir:
        export.pack(out, args.pack_dir, "target")

    torch.manual_seed(args.seed + 2)
    draft = LlamaForCausalLM(architecture.llama_config(dshape, vocab, eos_id)).to(device)
    sampler = training.WindowSampler(train_stream, args.batch, args.seq_len, seed=args.seed + 3)
    dlog = training.distill_draft(
        draft,
        target,
        sampler,
        training.Budget(args.draft_seconds, args.draft_steps),
        training.Optim(args.draft_lr, warmup_steps=args.warmup_steps),
        args.log_every,
    )
    export.save_model(draft, draft_dir, eos_id)
    tokenizer.save_tokenizer(tok, draft_dir, architecture.MAX_POSITIONS)
    del target, draft, train_stream
    phase("draft")
    if args.pack_dir:
        export.pack(out, args.pack_dir, "pair")
        for stale in args.pack_dir.glob("target.tar.*"):
            stale.unlink()

    # Everything below measures the shipped artifacts: bf16 weights read back as float32,
    # as our runtime runs them on a CPU.
    held = prompts.sample_prompts(test_files, args.prompts, args.seed)
    prompts.write_jsonl(held, out / "heldout_prompts.jsonl")
    t_model = AutoModelForCausalLM.from_pretrained(str(target_dir), dtype=torch.float32).to(device).eval()
    d_model = AutoModelForCausalLM.from_pretrained(str(draft_dir), dtype=torch.float32).to(device).eval()
    test_dev = test_stream.to(device)
    ce_t = training.mean_cross_entropy(t_model, test_dev, args.seq_len, args.eval_windows, 16)
    ce_d = training.mean_cross_entropy(d_model, test_dev, args.seq_len, args.eval_windows, 16)
    prompt_ids = [tok.encode(p["prompt"]).ids for p in held]
    acc, refs = acceptance.measure(t_model, d_model, prompt_ids, args.positions, args.k_max, eos_id)
    phase("eval")

    n_target = t_model.num_parameters()
    n_draft = d_model.num_parameters()
    metrics = {
        "command": "python3 scripts/train_model_pair.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "seed": args.seed,
        "host": {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "corpus": stats | {"roots": roots, "max_corpus_mb": args.max_corpus_mb, "test_percent": args.test_percent},
        "tokenizer": {"type": "byte-level BPE", "vocab_size": vocab, "trained_on_mb": round(size / 1e6, 1)},
        "target": model_report(tshape, n_target, tlog, "final_train_loss", ce_t),
        "draft": model_report(dshape, n_draft, dlog, "final_train_kl", ce_d)
        | {"target_over_draft_params": round(n_target / n_draft, 2)},
        "batch": args.batch,
        "seq_len": args.seq_len,
        "acceptance": acc.as_dict() | {"prompts": len(held), "positions_per_prompt": args.positions},
        "samples": [{"prompt": held[i]["prompt"], "target_continuation": tok.decode(refs[i])} for i in range(2)],
        "phases_seconds": phases,
    }
    (out / "training_metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    summary = {k: metrics[k] for k in ("corpus", "tokenizer", "acceptance", "phases_seconds")}
    summary |= {m: {k: v for k, v in metrics[m].items() if k != "history"} for m in ("target", "draft")}
    print(json.dumps(summary, indent=1), flush=True)
    if args.pack_dir:  # the models are packed already; these two are small and come back as they are
        for name in ("training_metrics.json", "heldout_prompts.jsonl"):
            shutil.copy(out / name, args.pack_dir / name)
    return metrics


if __name__ == "__main__":
    main()
