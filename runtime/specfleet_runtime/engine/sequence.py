"""One request's state inside the engine, and the rules for when it is finished."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..ngram import NgramProposer
from ..tokenizer import DetokenizeStream
from .api import FinishReason, OutputCallback, RequestOutput, SamplingParams


@dataclass(eq=False)
class Sequence:
    request_id: str
    tokens: list[int]  # prompt + committed generated tokens
    prompt_len: int
    params: SamplingParams
    on_output: OutputCallback
    stream: DetokenizeStream
    generator: torch.Generator | None  # per-request seed; None uses the engine's
    slot: int = -1
    # Positions the draft model's cache holds; it lags the target after steps without
    # drafting (or the bonus token) and catches up in the next drafting step.
    draft_len: int = 0
    finish_reason: FinishReason | None = None
    closed: bool = False  # the final event has been handed out
    _ngram: NgramProposer | None = field(default=None, repr=False)
    _unreported: list[int] = field(default_factory=list, repr=False)

    @property
    def num_generated(self) -> int:
        return len(self.tokens) - self.prompt_len

    @property
    def ngram(self) -> NgramProposer:
        if self._ngram is None:
            self._ngram = NgramProposer(self.tokens)
        return self._ngram

    def commit(self, new_tokens: list[int], eos_ids: frozenset[int], max_model_len: int) -> int:
        """Append tokens until one finishes the request; returns how many were kept."""
        kept = 0
        for token in new_tokens:
            self.tokens.append(token)
            self._unreported.append(token)
            kept += 1
            if token in eos_ids:
                self.finish_reason = "stop"
                break
            self.stream.add(token)
            if self.stream.stopped:
                self.finish_reason = "stop"
                break
            if self.num_generated >= self.params.max_tokens or len(self.tokens) >= max_model_len:
                self.finish_reason = "length"
                break
        return kept

    def take_output(self) -> RequestOutput | None:
        """The event for what happened since the last one (None when nothing did)."""
        if self.closed or (not self._unreported and self.finish_reason is None):
            return None
        self.closed = self.finish_reason is not None
        out = RequestOutput(
            request_id=self.request_id,
            new_token_ids=self._unreported,
            new_text=self.stream.take(final=self.finish_reason is not None),
            finish_reason=self.finish_reason,
            prompt_tokens=self.prompt_len,
            completion_tokens=self.num_generated,
        )
        self._unreported = []
        return out
