"""Held-out prompts: whole-line snippets of test-split files (without the last newline),
the text that follows kept beside each as a human reference."""

from __future__ import annotations

import json
import random
from pathlib import Path

from .corpus import SourceFile


def sample_prompts(files: list[SourceFile], count: int, seed: int, min_chars: int = 400, max_chars: int = 1200) -> list[dict]:
    """`count` prompts, each as many whole lines as fit in `min_chars` (at least one line,
    cut to its last `max_chars` characters when a single line is longer still)."""
    rng = random.Random(seed)
    usable = sorted((f for f in files if f.text.count("\n") >= 40), key=lambda f: f.sha256)
    if not usable:
        raise ValueError("no held-out file has 40 lines or more")
    prompts = []
    for i in range(count):
        f = usable[i % len(usable)] if i < len(usable) else rng.choice(usable)
        lines = f.text.splitlines(keepends=True)
        for _ in range(20):  # a cut after a non-blank line, so the next token is not obvious
            end = rng.randrange(20, len(lines) - 10)
            if lines[end - 1].strip():
                break
        start = end
        while start > 0 and sum(map(len, lines[start - 1 : end])) <= min_chars:
            start -= 1
        # The cut drops the last line's newline: BPE merges "\n" with the next line's
        # indentation, so a prompt ending in a bare "\n" token is one the model has rarely
        # seen mid-file (it answers with end-of-file), which real clients seldom send.
        text = "".join(lines[start:end])[-max_chars:].removesuffix("\n")
        reference = "\n" + "".join(lines[end : end + 8])
        prompts.append({"id": i, "source": f.path, "prompt": text, "reference": reference})
    return prompts


def write_jsonl(rows: list[dict], path: Path) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
