"""The model folder's tokenizer.json (via `tokenizers`), its EOS ids and chat template,
and incremental detokenization with stop strings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer

# Used when tokenizer_config.json has no chat_template (documented for the chat endpoint).
FALLBACK_CHAT_FORMAT = "one line per message, 'role: content', then 'assistant:'"


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _as_ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list) else [int(value)]


def _token_text(value: Any) -> str | None:
    # tokenizer_config.json writes special tokens as a string or an AddedToken dict.
    if isinstance(value, dict):
        return value.get("content")
    return value


class Tokenizer:
    def __init__(self, model_dir: Path) -> None:
        model_dir = Path(model_dir)
        path = model_dir / "tokenizer.json"
        if not path.is_file():
            raise ValueError(f"{model_dir}: no tokenizer.json")
        self._tok = HFTokenizer.from_file(str(path))
        tok_cfg = _read_json(model_dir / "tokenizer_config.json")
        self.chat_template: str | None = tok_cfg.get("chat_template")
        if isinstance(self.chat_template, list):  # named templates: use "default"
            named = {t["name"]: t["template"] for t in self.chat_template}
            self.chat_template = named.get("default")
        self.bos_token = _token_text(tok_cfg.get("bos_token"))
        self.eos_token = _token_text(tok_cfg.get("eos_token"))
        eos = _as_ids(_read_json(model_dir / "generation_config.json").get("eos_token_id"))
        eos += _as_ids(_read_json(model_dir / "config.json").get("eos_token_id"))
        if self.eos_token and self._tok.token_to_id(self.eos_token) is not None:
            eos.append(self._tok.token_to_id(self.eos_token))
        self.eos_token_ids: frozenset[int] = frozenset(eos)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int], *, skip_special_tokens: bool = True) -> str:
        return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: list[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
        """The prompt text for a chat: the folder's jinja template, else the plain fallback
        ("role: content" per line, then "assistant:")."""
        if self.chat_template is None:
            lines = [f"{m['role']}: {m['content']}" for m in messages]
            return "\n".join(lines + ["assistant:"])
        return _compile_template(self.chat_template).render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token or "",
            eos_token=self.eos_token or "",
        )

    def stream(self, prompt_ids: list[int], stop: tuple[str, ...] = ()) -> "DetokenizeStream":
        return DetokenizeStream(self, prompt_ids, stop)


def _compile_template(source: str):
    # Sandboxed like transformers, with its whitespace settings and raise_exception helper.
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source)


class DetokenizeStream:
    """Turns generated ids into text deltas, one call per batch of new tokens.

    Decodes a short window (vLLM's prefix/read offsets) so multi-byte characters split
    across tokens come out whole, and holds back text that could still become a stop
    string, so a stop string and what follows are never emitted.
    """

    def __init__(self, tokenizer: Tokenizer, prompt_ids: list[int], stop: tuple[str, ...]) -> None:
        self._tok = tokenizer
        self._ids = list(prompt_ids[-6:])
        self._prefix = 0
        self._read = len(self._ids)
        self._stop = tuple(s for s in stop if s)
        self._hold = max((len(s) for s in self._stop), default=1) - 1
        self._text = ""  # decoded generated text
        self._emitted = 0  # chars of _text already handed out
        self.stopped = False

    def add(self, token_id: int) -> None:
        """Append one generated token; sets `stopped` when a stop string appears."""
        self._ids.append(token_id)
        prefix_text = self._tok.decode(self._ids[self._prefix : self._read])
        new_text = self._tok.decode(self._ids[self._prefix :])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self._text += new_text[len(prefix_text) :]
            self._prefix, self._read = self._read, len(self._ids)
        if self._stop:
            start = max(0, self._emitted - self._hold)
            cut = min((i for i in (self._text.find(s, start) for s in self._stop) if i >= 0), default=-1)
            if cut >= 0:
                self._text = self._text[:cut]
                self.stopped = True

    def take(self, final: bool) -> str:
        """Text that is safe to emit now (all of it once the request is finished)."""
        end = len(self._text) if (final or self.stopped) else max(self._emitted, len(self._text) - self._hold)
        delta = self._text[self._emitted : end]
        self._emitted = end
        return delta
