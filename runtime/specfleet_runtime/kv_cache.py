"""Static KV cache (gpt-fast style) and the slot allocator that hands its rows to sequences.

A sequence owns one slot for its lifetime. Its length is tracked by the engine, not here:
entries beyond the length are stale (rejected drafts, padding) and are masked out by
position, then overwritten. That makes rollback a matter of forgetting a number.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class KVCache(nn.Module):
    """One layer's cache: k and v of shape [slots, kv_heads, max_len, head_dim]."""

    def __init__(self, slots: int, kv_heads: int, max_len: int, head_dim: int, dtype: torch.dtype, device) -> None:
        super().__init__()
        shape = (slots, kv_heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def resized(self, max_len: int) -> "KVCache":
        """A cache of another length holding this one's first positions."""
        slots, kv_heads, old_len, head_dim = self.k.shape
        new = KVCache(slots, kv_heads, max_len, head_dim, self.k.dtype, self.k.device)
        keep = min(old_len, max_len)
        new.k[:, :, :keep] = self.k[:, :, :keep]
        new.v[:, :, :keep] = self.v[:, :, :keep]
        return new

    def update(
        self, slots: Tensor, input_pos: Tensor, k: Tensor, v: Tensor, span: int, prefix: bool
    ) -> tuple[Tensor, Tensor]:
        """Write k/v [B, T, kvh, hd] at (slot, position); return the slots' first `span`
        positions, [B, kvh, span, hd]. `prefix`: the slots are 0..B-1, so the result can be
        a view instead of a gathered copy."""
        self.k[slots[:, None], :, input_pos] = k
        self.v[slots[:, None], :, input_pos] = v
        if prefix:
            b = slots.shape[0]
            return self.k[:b, :, :span], self.v[:b, :, :span]
        return self.k[slots, :, :span], self.v[slots, :, :span]


class SlotAllocator:
    """Lowest-free-first, so a small batch keeps to the first rows of the cache."""

    def __init__(self, slots: int) -> None:
        self._free = list(range(slots))

    @property
    def free(self) -> int:
        return len(self._free)

    def take(self) -> int:
        self._free.sort()
        return self._free.pop(0)

    def give(self, slot: int) -> None:
        self._free.append(slot)
