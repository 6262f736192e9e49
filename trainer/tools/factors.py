"""LoRA factors as plain matrices, and back.

Every tool works on the 2-D view of a module: ΔW = U @ D with U [out, r] and D [r, n], where
n = in for a Linear layer and n = in·kh·kw for a convolution. That view is exact for kohya's
conv modules because lora_up of a conv is always a 1×1 kernel:
ΔW[o, i, :, :] = Σ_r U[o, r] · D[r, i, :, :], i.e. U @ D.reshape(r, -1) reshaped to [out, in, kh, kw].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from trainer.tools.errors import ToolError


@dataclass(frozen=True)
class ModuleShape:
    """Geometry of one LoRA target layer (independent of the rank)."""

    out_features: int
    in_features: int
    kernel: Optional[tuple[int, int]] = None  # None: Linear; (kh, kw): Conv2d

    @property
    def is_conv(self) -> bool:
        return self.kernel is not None

    @property
    def is_spatial(self) -> bool:
        """A conv with a kernel larger than 1×1: the modules that kohya's `conv_dim` applies to."""
        return self.kernel is not None and self.kernel != (1, 1)

    @property
    def kind(self) -> str:
        if self.kernel is None:
            return "linear"
        return f"conv{self.kernel[0]}x{self.kernel[1]}"

    @property
    def flat_in(self) -> int:
        """Columns of the 2-D view: in_features · kh · kw."""
        if self.kernel is None:
            return self.in_features
        return self.in_features * self.kernel[0] * self.kernel[1]

    @property
    def max_rank(self) -> int:
        return min(self.out_features, self.flat_in)

    def weight_shape(self) -> tuple[int, ...]:
        if self.kernel is None:
            return (self.out_features, self.in_features)
        return (self.out_features, self.in_features, *self.kernel)


def shape_of_factors(name: str, down: Tensor, up: Tensor) -> ModuleShape:
    """Validate a kohya (lora_down, lora_up) pair and return the layer geometry."""
    if down.ndim >= 1 and down.shape[0] == 0:
        raise ToolError(f"{name}: rank 0 module")
    if down.ndim == 2 and up.ndim == 2:
        if up.shape[1] != down.shape[0]:
            raise ToolError(f"{name}: lora_up {tuple(up.shape)} does not match lora_down {tuple(down.shape)}")
        return ModuleShape(int(up.shape[0]), int(down.shape[1]))
    if down.ndim == 4 and up.ndim == 4:
        if up.shape[1] != down.shape[0]:
            raise ToolError(f"{name}: lora_up {tuple(up.shape)} does not match lora_down {tuple(down.shape)}")
        if tuple(up.shape[2:]) != (1, 1):
            raise ToolError(f"{name}: lora_up has a {tuple(up.shape[2:])} kernel; only 1×1 lora_up is supported")
        return ModuleShape(int(up.shape[0]), int(down.shape[1]), (int(down.shape[2]), int(down.shape[3])))
    raise ToolError(f"{name}: unsupported factor shapes lora_down {tuple(down.shape)}, lora_up {tuple(up.shape)}")


def shape_of_weight(name: str, weight: Tensor) -> Optional[ModuleShape]:
    """Geometry of a base-model weight (Linear [out, in] or Conv2d [out, in, kh, kw]); None for others."""
    if weight.ndim == 2:
        return ModuleShape(int(weight.shape[0]), int(weight.shape[1]))
    if weight.ndim == 4:
        return ModuleShape(int(weight.shape[0]), int(weight.shape[1]), (int(weight.shape[2]), int(weight.shape[3])))
    return None


def factor_matrices(down: Tensor, up: Tensor, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """(U [out, r], D [r, n]) from kohya tensors, in `dtype`."""
    rank = down.shape[0]
    return up.reshape(up.shape[0], rank).to(dtype), down.reshape(rank, -1).to(dtype)


def kohya_factors(shape: ModuleShape, U: Tensor, D: Tensor) -> tuple[Tensor, Tensor]:
    """(lora_down, lora_up) in kohya's layout from U [out, k] and D [k, n]; float32, contiguous, on CPU."""
    k = U.shape[1]
    U = U.detach().to("cpu", torch.float32)
    D = D.detach().to("cpu", torch.float32)
    if shape.kernel is None:
        return D.contiguous(), U.contiguous()
    down = D.reshape(k, shape.in_features, *shape.kernel).contiguous()
    up = U.reshape(shape.out_features, k, 1, 1).contiguous()
    return down, up


def dense_matrix(weight: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """The [out, n] view of a Linear or Conv2d weight."""
    return weight.reshape(weight.shape[0], -1).to(dtype)


def scale_of(module) -> float:
    """alpha / rank of a kohya_format.LoraModule as a Python float."""
    return float(module.scale)


def make_module(name: str, shape: ModuleShape, U: Tensor, D: Tensor, alpha: float):
    """A kohya_format.LoraModule from U [out, k], D [k, n] and alpha."""
    from trainer.network.kohya_format import LoraModule  # the file format lives in trainer/network

    down, up = kohya_factors(shape, U, D)
    return LoraModule(name, down, up, float(alpha))


def product_norm(U: Tensor, D: Tensor) -> Tensor:
    """‖U @ D‖_F without forming the product (batched): sqrt(Σ (UᵀU) ∘ (DDᵀ))."""
    gram = (U.mT @ U) * (D @ D.mT)
    return gram.sum(dim=(-2, -1)).clamp_min(0.0).sqrt()


def product_distance(U1: Tensor, D1: Tensor, U2: Tensor, D2: Tensor, norm1: Optional[float] = None) -> Tensor:
    """‖U1 D1 − U2 D2‖_F from the factors: ‖A‖² + ‖B‖² − 2⟨A, B⟩ with ⟨A, B⟩ = Σ (U1ᵀU2) ∘ (D1 D2ᵀ).
    Costs O((m + n)·r1·r2) instead of forming the m×n products; accurate to ~1e-8 relative (fp64).
    `norm1`: ‖U1 D1‖_F when already known (e.g. ‖σ‖ from an SVD)."""
    cross = ((U1.mT @ U2) * (D1 @ D2.mT)).sum(dim=(-2, -1))
    sq1 = product_norm(U1, D1) ** 2 if norm1 is None else norm1**2
    sq = sq1 + product_norm(U2, D2) ** 2 - 2.0 * cross
    return sq.clamp_min(0.0).sqrt()
