"""A model with its static cache, and the batched forward passes the engine runs on it.

Every pass is timed (after a CUDA synchronize, so the time is the pass, not its launch)
and recorded as a ForwardTiming for the step report.
"""

from __future__ import annotations

import time
from typing import Literal

import torch
from torch import Tensor

from ..model import Transformer
from .api import ForwardTiming


class ModelRunner:
    def __init__(self, name: Literal["target", "draft"], model: Transformer, slots: int, cache_len: int) -> None:
        self.name = name
        self.model = model
        self.device = model.embed_tokens.weight.device
        self.vocab_size = model.cfg.vocab_size
        model.setup_cache(slots, cache_len)
        # Padding tokens write their keys here; no sequence ever reaches this position.
        self.scratch_pos = cache_len - 1
        self._cuda = self.device.type == "cuda"

    def _timed(self, timings: list[ForwardTiming], *args, **kwargs) -> Tensor:
        if self._cuda:
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.model(*args, **kwargs)
        if self._cuda:
            torch.cuda.synchronize(self.device)
        timings.append(ForwardTiming(self.name, int(args[0].numel()), time.perf_counter() - start))
        return out

    def extend(self, rows: list[list[int]], starts: list[int], slots: list[int], timings: list[ForwardTiming]) -> Tensor:
        """Feed each row's tokens at positions start.. in its slot; logits of each row's last token, [B, V].

        Rows of different lengths are right-padded; padding goes to the scratch position.
        """
        width = max(len(r) for r in rows)
        tokens = [r + [0] * (width - len(r)) for r in rows]
        pos = [list(range(s, s + len(r))) + [self.scratch_pos] * (width - len(r)) for r, s in zip(rows, starts)]
        span = max(s + len(r) for r, s in zip(rows, starts))
        logits = self._timed(
            timings,
            torch.tensor(tokens, device=self.device),
            torch.tensor(pos, device=self.device),
            torch.tensor(slots, device=self.device),
            span=span,
            output_index=torch.tensor([[len(r) - 1] for r in rows], device=self.device),
        )
        return logits[:, 0]

    def decode(
        self, tokens: Tensor, starts: Tensor, slots: Tensor, span: int, timings: list[ForwardTiming], slots_prefix: bool = False
    ) -> Tensor:
        """tokens [B, T] at positions starts[b].. (all on device); logits [B, T, V]."""
        pos = starts[:, None] + torch.arange(tokens.shape[1], device=self.device)[None, :]
        return self._timed(timings, tokens, pos, slots, span=span, slots_prefix=slots_prefix)

    def timed_pass(self, batch: int, width: int, span: int, timings: list[ForwardTiming]) -> None:
        """A pass of batch x width tokens that writes only to the scratch position, so it can
        be timed without touching any sequence's cache (startup calibration)."""
        tokens = torch.zeros(batch, width, dtype=torch.int64, device=self.device)
        pos = torch.full((batch, width), self.scratch_pos, dtype=torch.int64, device=self.device)
        slots = torch.arange(batch, device=self.device)
        self._timed(timings, tokens, pos, slots, span=span)
