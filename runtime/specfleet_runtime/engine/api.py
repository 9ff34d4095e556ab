"""The boundary between the engine (a background thread) and the server (asyncio).

Plain dataclasses and a Protocol, no torch: the server and the metrics layer are written
against these, the engine implements them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, Protocol

FinishReason = Literal["stop", "length", "abort"]


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 means no top-k cut
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class RequestOutput:
    """One event for one request: new tokens since the last event, and the end if it came."""

    request_id: str
    new_token_ids: list[int]
    new_text: str
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


PassShape = Literal["decode", "verify", "prefill"]
"""decode: one token per row. verify: several per row, in a decode step (a speculative
verify pass, or a draft catching up). prefill: prompts. A verify pass over b rows costs
less than a decode pass of as many tokens over b * (K + 1) rows (each row's attention
reads its cache once), so the two shapes are timed apart."""


def pass_shape(tokens_per_row: int) -> PassShape:
    """The shape a decode-step pass is timed as."""
    return "decode" if tokens_per_row == 1 else "verify"


@dataclass(frozen=True)
class ForwardTiming:
    model: Literal["target", "draft"]
    tokens: int  # tokens in the pass (all sequences together)
    seconds: float
    shape: PassShape
    rows: int  # sequences in the pass


@dataclass
class StepReport:
    """What one engine step did; the metrics layer turns these into Prometheus series."""

    decode_batch: int  # sequences in the decode phase (prefills excluded): the schedule's key
    k: int  # draft length the schedule gave for this step; 0 when not speculating
    prefill_tokens: int = 0
    generated_tokens: int = 0
    num_drafts: int = 0  # sequences that proposed at least one draft token this step
    draft_tokens_per_pos: list[int] = field(default_factory=list)  # len k: drafts reaching pos i
    accepted_per_pos: list[int] = field(default_factory=list)  # len k: accepted at pos i
    forward_timings: list[ForwardTiming] = field(default_factory=list)
    running: int = 0
    waiting: int = 0
    # Wall time of the whole step less its prefill (None: no decode this step): the forward
    # passes of the decode plus everything around them (sampling, acceptance, bookkeeping).
    decode_seconds: float | None = None
    decode_forward_seconds: float = 0.0  # the part of decode_seconds spent in forward passes


class StepObserver(Protocol):
    def on_step(self, report: StepReport) -> None: ...


OutputCallback = Callable[[RequestOutput], None]
