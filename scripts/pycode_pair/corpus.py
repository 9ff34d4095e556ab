"""The training corpus: Python source shipped with the interpreter running the recipe.

Every decision is a pure function of the file list and contents, so the same machine
yields the same corpus: candidates are visited in sha256(path) order (a fixed pseudo-random
sample when the byte cap is hit), duplicates are dropped by content hash, and the held-out
split is chosen by content hash, so a file and its copies never straddle the split.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import site
import sysconfig
from dataclasses import dataclass
from pathlib import Path

MAX_FILE_BYTES = 200_000  # larger .py files are mostly generated tables, not code
MIN_FILE_BYTES = 200


@dataclass(frozen=True)
class SourceFile:
    path: str  # "<root tag>/<path relative to that root>"
    sha256: str
    split: str  # "train" | "test"
    text: str


@dataclass(frozen=True)
class Corpus:
    files: list[SourceFile]
    duplicates: list[tuple[str, str]]  # (path, sha256 of the kept file with that content)
    roots: dict[str, str]

    def split(self, name: str) -> list[SourceFile]:
        return [f for f in self.files if f.split == name]


def python_roots() -> dict[str, str]:
    """Tag -> directory: the standard library and every site-packages of this interpreter."""
    roots = {"stdlib": sysconfig.get_paths()["stdlib"]}
    dirs = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()]
    for d in dict.fromkeys(str(Path(p).resolve()) for p in dirs):
        if Path(d).is_dir() and d != str(Path(roots["stdlib"]).resolve()):
            roots[f"site{len(roots)}"] = d
    return roots


def _path_key(tagged: str) -> str:
    return hashlib.sha256(tagged.encode()).hexdigest()


def _candidates(roots: dict[str, str]) -> list[tuple[str, Path]]:
    out = []
    for tag, root in roots.items():
        for dirpath, dirnames, filenames in os.walk(root):  # never follows symlinked dirs
            rel = Path(dirpath).relative_to(root)
            # site-packages usually sits inside stdlib's lib dir: count it once, as a site root
            if tag == "stdlib" and "site-packages" in dirnames:
                dirnames.remove("site-packages")
            dirnames.sort()
            for name in filenames:
                if not name.endswith(".py"):
                    continue
                path = Path(dirpath) / name
                if path.is_symlink() or not path.is_file():
                    continue
                if MIN_FILE_BYTES <= path.stat().st_size <= MAX_FILE_BYTES:
                    out.append((f"{tag}/{(rel / name).as_posix()}", path))
    return sorted(out, key=lambda c: _path_key(c[0]))


def is_test_file(sha256: str, test_percent: int) -> bool:
    return int(sha256[:8], 16) % 100 < test_percent


def build_corpus(roots: dict[str, str], max_bytes: int, test_percent: int) -> Corpus:
    kept: dict[str, SourceFile] = {}
    duplicates: list[tuple[str, str]] = []
    total = 0
    for tagged, path in _candidates(roots):
        if total >= max_bytes:
            break
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
        digest = hashlib.sha256(raw).hexdigest()
        if digest in kept:
            duplicates.append((tagged, digest))
            continue
        split = "test" if is_test_file(digest, test_percent) else "train"
        kept[digest] = SourceFile(tagged, digest, split, text)
        total += len(raw)
    if not kept:
        raise RuntimeError(f"no Python source found under {list(roots.values())}")
    return Corpus(list(kept.values()), duplicates, roots)


def write_manifest(corpus: Corpus, path: Path) -> None:
    """One JSON line per file considered: kept files with their split, dropped duplicates."""
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(json.dumps({"roots": corpus.roots}) + "\n")
        for f in corpus.files:
            fh.write(json.dumps({"path": f.path, "sha256": f.sha256, "split": f.split}) + "\n")
        for p, digest in corpus.duplicates:
            fh.write(json.dumps({"path": p, "sha256": digest, "split": "duplicate"}) + "\n")


def corpus_stats(corpus: Corpus) -> dict[str, int]:
    stats: dict[str, int] = {"duplicates_dropped": len(corpus.duplicates)}
    for name in ("train", "test"):
        files = corpus.split(name)
        stats[f"{name}_files"] = len(files)
        stats[f"{name}_bytes"] = sum(len(f.text.encode()) for f in files)
    return stats
