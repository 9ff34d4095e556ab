"""The recipe's pure parts: corpus selection, tokenizer, prompts, packing, batches and the
acceptance arithmetic, each against small inputs whose right answer is known."""

import gzip
import json
from pathlib import Path

import pytest
import torch
from pycode_pair import acceptance, corpus, export, prompts, tokenizer, training

CODE = "def add(a, b):\n    return a + b\n\n\nclass Point:\n    def __init__(self, x):\n        self.x = x\n" * 4


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def source_tree(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    for i in range(30):
        write(root, f"pkg{i % 3}/mod{i}.py", f"# module {i}\n" + CODE)
    write(root, "pkg0/copy_of_mod1.py", "# module 1\n" + CODE)  # same bytes as pkg1/mod1.py
    write(root, "pkg0/tiny.py", "x = 1\n")  # under the size floor
    write(root, "pkg0/notes.txt", CODE)  # not Python
    write(root, "pkg0/latin1.py", "")
    (root / "pkg0/latin1.py").write_bytes(b"# caf\xe9\n" + CODE.encode())  # not UTF-8
    (root / "pkg0/linked.py").symlink_to(root / "pkg1/mod1.py")
    return root


def test_corpus_keeps_each_content_once_and_records_what_it_dropped(source_tree, tmp_path):
    corp = corpus.build_corpus({"src": str(source_tree)}, max_bytes=10**9, test_percent=20)
    assert len(corp.files) == 30
    assert len({f.sha256 for f in corp.files}) == 30
    assert [p for p, _ in corp.duplicates] in (["src/pkg0/copy_of_mod1.py"], ["src/pkg1/mod1.py"])
    paths = {f.path for f in corp.files}
    assert not paths & {"src/pkg0/tiny.py", "src/pkg0/notes.txt", "src/pkg0/latin1.py", "src/pkg0/linked.py"}

    corpus.write_manifest(corp, tmp_path / "m.jsonl.gz")
    with gzip.open(tmp_path / "m.jsonl.gz", "rt") as fh:
        rows = [json.loads(line) for line in fh]
    assert rows[0] == {"roots": {"src": str(source_tree)}}
    assert sorted(r["split"] for r in rows[1:]).count("duplicate") == 1
    assert {r["path"] for r in rows[1:] if r["split"] != "duplicate"} == paths


def test_split_is_by_content_and_the_same_on_every_run(source_tree):
    a = corpus.build_corpus({"src": str(source_tree)}, 10**9, 20)
    b = corpus.build_corpus({"src": str(source_tree)}, 10**9, 20)
    assert [(f.path, f.split) for f in a.files] == [(f.path, f.split) for f in b.files]
    assert 0 < len(a.split("test")) < len(a.files)
    for f in a.files:
        assert (f.split == "test") == corpus.is_test_file(f.sha256, 20)


def test_byte_cap_stops_the_corpus_near_the_cap(source_tree):
    one = len(("# module 10\n" + CODE).encode())
    corp = corpus.build_corpus({"src": str(source_tree)}, max_bytes=5 * one, test_percent=0)
    assert 5 <= len(corp.files) <= 6


def test_tokenizer_round_trips_code_byte_for_byte_and_saves_for_transformers(tmp_path):
    from transformers import AutoTokenizer

    tok = tokenizer.train_tokenizer([CODE] * 50, vocab_size=400)
    text = "def f(naïve):\n\treturn {'€': naïve}  # ok\n"
    assert tok.decode(tok.encode(text).ids) == text
    assert tok.token_to_id(tokenizer.EOS) == 0
    tokenizer.save_tokenizer(tok, tmp_path, model_max_length=2048)
    hf = AutoTokenizer.from_pretrained(str(tmp_path))
    assert hf.encode(text) == tok.encode(text).ids
    assert hf.eos_token == tokenizer.EOS


def test_prompts_end_inside_a_line_and_come_only_from_the_given_files():
    lines = "".join(f"    value_{i} = compute({i})\n" for i in range(200))
    files = [corpus.SourceFile("t/a.py", "ab" * 32, "test", lines)]
    rows = prompts.sample_prompts(files, count=5, seed=3)
    assert len(rows) == 5
    for row in rows:
        assert row["source"] == "t/a.py"
        assert not row["prompt"].endswith("\n")
        assert (row["prompt"] + row["reference"]) in lines
        assert 400 - 28 < len(row["prompt"]) < 400  # whole lines of 27 characters, up to 400 in all
    assert rows == prompts.sample_prompts(files, count=5, seed=3)


def test_pack_splits_into_parts_that_reassemble_the_folder(tmp_path):
    import io
    import os
    import tarfile

    src = tmp_path / "src"
    src.mkdir()
    payload = os.urandom(3000)
    (src / "blob.bin").write_bytes(payload)
    parts = export.pack(src, tmp_path, "x", part_bytes=1024)
    assert [p.name for p in parts][:2] == ["x.tar.00", "x.tar.01"]
    assert all(p.stat().st_size <= 1024 for p in parts)
    data = b"".join(p.read_bytes() for p in parts)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.extractfile("./blob.bin").read() == payload


def test_window_sampler_is_seeded_and_labels_are_the_next_tokens():
    stream = torch.arange(1000, dtype=torch.int32)
    x1, y1 = training.WindowSampler(stream, batch=4, seq_len=16, seed=5)()
    x2, _ = training.WindowSampler(stream, batch=4, seq_len=16, seed=5)()
    assert torch.equal(x1, x2)
    assert torch.equal(y1, x1 + 1)
    with pytest.raises(ValueError, match="shorter than one window"):
        training.WindowSampler(stream[:10], batch=1, seq_len=16, seed=0)


def test_learning_rate_warms_up_then_decays_to_its_floor():
    opt = training.Optim(peak_lr=1.0, warmup_steps=10, final_lr_fraction=0.1)
    assert opt.lr(0, 0.0) == pytest.approx(0.1)
    assert opt.lr(9, 0.01) == pytest.approx(1.0)
    assert opt.lr(50, 0.5) == pytest.approx(0.55)
    assert opt.lr(99, 1.0) == pytest.approx(0.1)
    assert training.Budget(seconds=10).progress(3, 5.0) == 0.5
    assert training.Budget(seconds=10, steps=4).progress(3, 100.0) == 0.75


def test_accepted_prefix_stops_at_the_first_disagreement():
    assert acceptance.accepted_prefix([1, 2, 3], [1, 2, 3]) == 3
    assert acceptance.accepted_prefix([1, 9, 3], [1, 2, 3]) == 1
    assert acceptance.accepted_prefix([9, 2, 3], [1, 2, 3]) == 0


def test_tokens_per_verify_step_adds_the_bonus_token_to_the_expected_accepted_drafts():
    acc = acceptance.Acceptance(positions=10, p_accept_at_least=[0.8, 0.5, 0.2])
    assert acc.tokens_per_step(1) == pytest.approx(1.8)
    assert acc.tokens_per_step(3) == pytest.approx(2.5)
    assert acc.as_dict()["tokens_per_verify_step"]["2"] == pytest.approx(2.3)
