"""CUDA graphs for decode passes: one captured forward per (batch bucket, tokens per row).

Batch-1 decode of a 1B model launches several hundred small kernels; launched one by one
from Python they cost far more than the GPU time they start. A replayed graph launches
them all at once. Graphs need fixed shapes and addresses, so a captured pass:
- pads the batch up to a bucket; padding rows write at the scratch position and their
  logits are dropped;
- attends over the whole cache (span = cache length) with the causal mask, since the
  longest sequence changes every step;
- reads its inputs from static buffers that each replay overwrites.
A cache resize moves the KV tensors, so it drops every graph (`clear`); graphs are
captured again on first use. One memory pool is shared by all graphs of a model, which
is safe because passes run one at a time and each result is copied out before the next.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..model import Transformer

BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
MAX_GRAPH_WIDTH = 16  # tokens per row: K+1 for K <= MAX_K, plus room


def batch_bucket(batch: int, slots: int) -> int | None:
    """The smallest bucket holding `batch` rows that the cache's slots allow, if any."""
    for bucket in BATCH_BUCKETS:
        if batch <= bucket <= slots:
            return bucket
    return None


@dataclass
class CapturedPass:
    graph: torch.cuda.CUDAGraph
    tokens: Tensor  # [B, T] static inputs
    pos: Tensor
    slots: Tensor
    logits: Tensor  # [B, T, V] static output
    padded_from: int  # rows from here on hold padding (a replay leaves its inputs as they are)


class DecodeGraphs:
    """Captured decode passes of one model over its static cache."""

    def __init__(self, model: Transformer, slots: int) -> None:
        self.model = model
        self.slots = slots
        self._passes: dict[tuple[int, int, bool], CapturedPass] = {}
        self._pool = torch.cuda.graph_pool_handle()

    def covers(self, batch: int, width: int) -> bool:
        return width <= MAX_GRAPH_WIDTH and batch_bucket(batch, self.slots) is not None

    def clear(self) -> None:
        self._passes.clear()

    def capture_if_new(self, batch: int, width: int, slots_prefix: bool, scratch_pos: int) -> None:
        key = (batch_bucket(batch, self.slots), width, slots_prefix)
        if key not in self._passes:
            self._passes[key] = self._capture(*key, scratch_pos)

    def run(self, tokens: Tensor, pos: Tensor, slots: Tensor, slots_prefix: bool, scratch_pos: int) -> Tensor:
        """Logits [B, T, V] of the pass, as the model's own forward computes them."""
        b, t = tokens.shape
        bucket = batch_bucket(b, self.slots)
        self.capture_if_new(b, t, slots_prefix, scratch_pos)
        captured = self._passes[(bucket, t, slots_prefix)]
        captured.tokens[:b].copy_(tokens)
        captured.pos[:b].copy_(pos)
        captured.slots[:b].copy_(slots)
        if b < captured.padded_from:
            captured.tokens[b:].zero_()
            captured.pos[b:].fill_(scratch_pos)
            # Padding rows take the slots after the real ones, which keeps a prefix a prefix;
            # they write only at the scratch position, which no real query attends to.
            captured.slots[b:].copy_(torch.arange(b, bucket, device=slots.device))
        captured.padded_from = b
        captured.graph.replay()
        return captured.logits[:b].clone()

    def _capture(self, bucket: int, width: int, slots_prefix: bool, scratch_pos: int) -> CapturedPass:
        device = self.model.embed_tokens.weight.device
        tokens = torch.zeros(bucket, width, dtype=torch.int64, device=device)
        pos = torch.full((bucket, width), scratch_pos, dtype=torch.int64, device=device)
        slots = torch.arange(bucket, device=device)

        def forward() -> Tensor:
            return self.model(tokens, pos, slots, span=self.model.max_len, slots_prefix=slots_prefix, padded_span=True)

        with torch.inference_mode():
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                forward()  # warm-up outside the graph: lazy kernel and workspace setup
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                logits = forward()
        return CapturedPass(graph, tokens, pos, slots, logits, padded_from=0)

