"""bfloat16 linear layers prepacked for oneDNN, on CPUs with native bf16 dot products.

Why: decode multiplies a few rows by each weight matrix. Plain `F.linear` on CPU
re-lays-out (packs) the weight on every call, which costs more than the multiply and
grows with the row count: on the 2-core EPYC this project is built on, a 256x6144 head
takes 0.46 ms for 4 rows against 0.21 ms for 1 in float32, and is slower still in bf16.
Packed once at load time, the same head takes 0.10 ms for 1 row and 0.12 ms for 4, so a
speculative verify pass of K+1 tokens costs about what a single-token pass does, which is
what makes speculation pay on a CPU at all. float32 weights are left alone: oneDNN's
float32 path brought no gain there.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

ROWS_HINT = 4  # oneDNN picks its blocking for this many rows; decode passes are 1..K+1


def bf16_prepack_available() -> bool:
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


class PackedLinear(nn.Module):
    """`nn.Linear` with its weight packed for oneDNN (read-only: inference only)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), ROWS_HINT)
        self.register_buffer("packed_weight", packed, persistent=False)
        bias = None if linear.bias is None else linear.bias.detach()
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")


def prepack_linears(model: nn.Module) -> int:
    """Replace every bf16 `nn.Linear` of a CPU model by a PackedLinear; how many were packed."""
    packed = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and child.weight.dtype == torch.bfloat16 and child.weight.device.type == "cpu":
                setattr(module, name, PackedLinear(child))
                packed += 1
    return packed
