"""The folder's tokenizer: round trips, EOS ids, chat templates, streaming text."""

from __future__ import annotations

import json

import pytest
from model_factory import EOS_TOKEN, make_random_model

from specfleet_runtime.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_random_model(tmp_path_factory.mktemp("tok") / "m")


def test_encode_decode_round_trips_code_and_unicode(folder):
    tok = Tokenizer(folder)
    text = "def naïve(x):\n    return 'größe ✓'  # 日本\n"
    assert tok.decode(tok.encode(text)) == text


def test_eos_ids_come_from_generation_config_config_and_tokenizer_config(folder, tmp_path):
    tok = Tokenizer(folder)
    assert tok.eos_token_ids == {tok._tok.token_to_id(EOS_TOKEN)}
    gen = json.loads((folder / "generation_config.json").read_text())
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in folder.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    (copy / "generation_config.json").write_text(json.dumps(gen | {"eos_token_id": [gen["eos_token_id"], 7]}))
    assert Tokenizer(copy).eos_token_ids == {gen["eos_token_id"], 7}


def test_chat_template_from_tokenizer_config_is_rendered(folder):
    tok = Tokenizer(folder)
    prompt = tok.apply_chat_template([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert prompt == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_without_a_chat_template_the_plain_fallback_is_used(tmp_path):
    tok = Tokenizer(make_random_model(tmp_path / "m", chat_template=None))
    prompt = tok.apply_chat_template([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert prompt == "system: Be brief.\nuser: Hi\nassistant:"


def test_streamed_text_equals_the_decoded_text_even_when_characters_span_tokens(folder):
    tok = Tokenizer(folder)
    ids = tok.encode("größe ✓ 日本語 — ok")
    assert any("\ufffd" in tok.decode([i]) for i in ids)  # some character is split across tokens
    stream = tok.stream([1, 2, 3])
    pieces = []
    for i in ids:
        stream.add(i)
        pieces.append(stream.take(final=False))
    pieces.append(stream.take(final=True))
    assert "".join(pieces) == tok.decode(ids)
    assert all("\ufffd" not in p for p in pieces)


def test_stream_holds_back_a_possible_stop_string_until_it_is_decided(folder):
    tok = Tokenizer(folder)
    stream = tok.stream([], stop=("END",))
    emitted = ""
    for i in tok.encode("abc EN"):
        stream.add(i)
        emitted += stream.take(final=False)
    assert emitted == "abc "[: len(emitted)] and "EN" not in emitted and not stream.stopped
    for i in tok.encode("D tail"):
        stream.add(i)
        emitted += stream.take(final=False)
        if stream.stopped:
            break
    assert stream.stopped
    assert emitted + stream.take(final=True) == "abc "
