"""A model with its static cache, and the batched forward passes the engine runs on it.

Every pass is timed (after a CUDA synchronize, so the time is the pass, not its launch)
and recorded as a ForwardTiming for the step report. On CUDA, decode passes replay
captured graphs (cuda_graphs.py); prefills, with their ragged rows, run eagerly. On CPU,
bfloat16 weights are prepacked for oneDNN (cpu_linear.py).
"""

from __future__ import annotations

import time
from typing import Callable, Literal

import torch
from torch import Tensor

from ..cpu_linear import bf16_prepack_available, prepack_linears
from ..model import Transformer
from .api import ForwardTiming, PassShape, pass_shape
from .cuda_graphs import DecodeGraphs


INITIAL_CACHE_LEN = 512


class ModelRunner:
    """`max_cache_len` positions per slot at most; the cache starts shorter and doubles when
    a pass needs more, so memory follows the longest live sequence, not max_model_len."""

    def __init__(
        self, name: Literal["target", "draft"], model: Transformer, slots: int, max_cache_len: int,
        cuda_graphs: bool = True, compile_layers: bool = False,
    ) -> None:
        self.name = name
        self.model = model
        self.device = model.embed_tokens.weight.device
        self.vocab_size = model.cfg.vocab_size
        self.max_cache_len = max_cache_len
        self.cache_len = min(INITIAL_CACHE_LEN, max_cache_len)
        model.setup_cache(slots, self.cache_len)
        self._cuda = self.device.type == "cuda"
        if self.device.type == "cpu" and bf16_prepack_available():
            prepack_linears(model)
        self.graphs = DecodeGraphs(model, slots) if self._cuda and cuda_graphs and model.graph_safe else None
        if self._cuda and compile_layers:
            # Regional compilation: the layers share one compiled graph (the weights are its
            # inputs), so compile time is one layer's, not the model's. Shapes are dynamic
            # from the start: batch, tokens per row and span change from pass to pass.
            for layer in model.layers:
                layer.compile(dynamic=True)

    @property
    def scratch_pos(self) -> int:
        """Padding tokens write their keys here: past every span a pass reads. Stale keys left
        here after a resize sit beyond every sequence's length, so they are masked until
        overwritten, like any rejected draft's."""
        return self.cache_len - 1

    def reserve(self, span: int) -> None:
        """Make room for a pass that reads `span` positions (plus the scratch position)."""
        if span + 1 <= self.cache_len:
            return
        if span + 1 > self.max_cache_len:
            raise ValueError(f"a pass over {span} positions exceeds the cache ({self.max_cache_len - 1})")
        self.cache_len = min(max(2 * self.cache_len, span + 1), self.max_cache_len)
        self.model.resize_cache(self.cache_len)
        if self.graphs is not None:
            self.graphs.clear()  # they point at the old cache tensors

    def _timed(
        self, timings: list[ForwardTiming], tokens: Tensor, shape: PassShape, forward: Callable[[], Tensor]
    ) -> Tensor:
        if self._cuda:
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        with torch.inference_mode():
            out = forward()
        if self._cuda:
            torch.cuda.synchronize(self.device)
        rows = tokens.shape[0] if tokens.dim() > 1 else 1
        timings.append(ForwardTiming(self.name, tokens.numel(), time.perf_counter() - start, shape, rows))
        return out

    def _decode_pass(self, tokens: Tensor, pos: Tensor, slots: Tensor, span: int, slots_prefix: bool,
                     timings: list[ForwardTiming]) -> Tensor:
        graphs = self.graphs if self.graphs is not None and self.graphs.covers(*tokens.shape) else None
        if graphs is not None:
            graphs.capture_if_new(tokens.shape[0], tokens.shape[1], slots_prefix, self.scratch_pos)  # not timed

        def forward() -> Tensor:
            if graphs is not None:
                return graphs.run(tokens, pos, slots, slots_prefix, self.scratch_pos)
            return self.model(tokens, pos, slots, span=span, slots_prefix=slots_prefix)

        return self._timed(timings, tokens, pass_shape(tokens.shape[1]), forward)

    def extend(
        self, rows: list[list[int]], starts: list[int], slots: list[int], timings: list[ForwardTiming],
        in_decode_step: bool = False,
    ) -> Tensor:
        """Feed each row's tokens at positions start.. in its slot; logits of each row's last token, [B, V].

        Rows of different lengths are right-padded; padding goes to the scratch position.
        `in_decode_step`: a draft catching up on a step's tokens, timed by its shape, not as a prefill.
        """
        width = max(len(r) for r in rows)
        span = max(s + len(r) for r, s in zip(rows, starts))
        self.reserve(span)
        tokens = [r + [0] * (width - len(r)) for r in rows]
        pos = [list(range(s, s + len(r))) + [self.scratch_pos] * (width - len(r)) for r, s in zip(rows, starts)]
        tokens_t, pos_t, slots_t, last_t = (
            torch.tensor(x, device=self.device) for x in (tokens, pos, slots, [[len(r) - 1] for r in rows])
        )

        def forward() -> Tensor:
            return self.model(tokens_t, pos_t, slots_t, span=span, output_index=last_t)

        shape: PassShape = pass_shape(width) if in_decode_step else "prefill"
        return self._timed(timings, tokens_t, shape, forward)[:, 0]

    def decode(
        self, tokens: Tensor, starts: Tensor, slots: Tensor, span: int, timings: list[ForwardTiming], slots_prefix: bool = False
    ) -> Tensor:
        """tokens [B, T] at positions starts[b].. (all on device); logits [B, T, V]."""
        self.reserve(span)
        pos = starts[:, None] + torch.arange(tokens.shape[1], device=self.device)[None, :]
        return self._decode_pass(tokens, pos, slots, span, slots_prefix, timings)

    def timed_pass(self, batch: int, width: int, span: int, timings: list[ForwardTiming]) -> None:
        """A pass of batch x width tokens that writes only to the scratch position, so it can
        be timed without touching any sequence's cache (startup calibration)."""
        self.reserve(span)
        tokens = torch.zeros(batch, width, dtype=torch.int64, device=self.device)
        pos = torch.full((batch, width), self.scratch_pos, dtype=torch.int64, device=self.device)
        slots = torch.arange(batch, device=self.device)
        self._decode_pass(tokens, pos, slots, span, True, timings)
