"""Singular value decompositions for LoRA work, and the choice of the rank to keep.

Why not a full SVD of ΔW per module (what sd-scripts does)? For resize and svd_merge ΔW is given as
a product U @ D of rank r ≪ min(out, n). Its exact thin SVD follows from two QR factorisations and
the SVD of an r×r core, without ever forming ΔW:

    U = Qu Ru,  Dᵀ = Qd Rd   =>   U D = Qu (Ru Rdᵀ) Qdᵀ = (Qu P) Σ (Qd Q)ᵀ   with Ru Rdᵀ = P Σ Qᵀ.

Cost O((out + n)·r²) instead of O(out·n·min(out, n)); the result is exact (not randomised).
For extract, ΔW is dense; there the top-k singular triplets come from a randomised range finder
with power iterations (`torch.svd_lowrank`) when k ≪ min(out, n), else from a full thin SVD.
Same-shape modules are stacked and decomposed in one batched call.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterable, Iterator, Optional, Sequence, TypeVar

import torch
from torch import Tensor

from trainer.tools.errors import ToolError
from trainer.tools.options import DYNAMIC_METHODS, dynamic_param_problem

# Relative slack when comparing a retained fraction with its target: cumsum(σ²)/Σσ² for the full
# spectrum can come out as 0.9999999999999998, and p = 1.0 must still select the whole spectrum.
_FRACTION_TOL = 1e-12
# A product whose largest singular value is this small relative to ‖U‖·‖D‖ is cancellation noise
# (e.g. L merged with −L): treat it as zero.
_ZERO_REL = 1e-9
# Oversampling and power iterations of the randomised SVD (Halko et al.); 4 iterations make the
# top-k subspace accurate to far below fp16 resolution for the spectra seen in fine-tune deltas.
_OVERSAMPLE = 16
_POWER_ITERS = 4
# Largest batch handed to one decomposition call, in tensor elements (memory guard).
_BATCH_ELEMENTS = 48 * 1024 * 1024

T = TypeVar("T")


def resolve_device(device: Optional[str]) -> torch.device:
    """`--device` value -> torch.device (None/"" -> cpu); a clear error when it is not usable."""
    if not device:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ToolError(f"unknown device {device!r}", hint="use cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ToolError(f"device {device!r} requested but CUDA is not available", hint="use --device cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ToolError(f"device {device!r} requested but MPS is not available", hint="use --device cpu")
    return dev


def compute_dtype(device: torch.device) -> torch.dtype:
    """float64 on the CPU (the factored decompositions are cheap, so take the accuracy);
    float32 on accelerators, where float64 is slow or missing."""
    return torch.float64 if device.type == "cpu" else torch.float32


@contextmanager
def small_matrix_threads(device: torch.device) -> Iterator[None]:
    """Run the factored decompositions single-threaded on the CPU.

    Their matrices are thin (rank ≤ a few hundred), so each LAPACK call is far too small to split
    across threads, and the thread hand-offs dominate: on a 2-core machine shared with other jobs,
    resizing an SD1.5 LoCon file took 46 s wall / 16 s CPU with 2 threads and 4 s / 1.3 s with one.
    The previous setting is restored afterwards (torch's thread count is process-wide)."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def batches(items: Sequence[T], elements_per_item: int) -> Iterator[list[T]]:
    """Split `items` into lists whose total size stays under the batch memory guard."""
    per_batch = max(1, _BATCH_ELEMENTS // max(1, elements_per_item))
    for start in range(0, len(items), per_batch):
        yield list(items[start : start + per_batch])


def factored_svd(U: Tensor, D: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Exact thin SVD of U @ D without forming it.

    U: [..., m, r], D: [..., r, n]. Returns P [..., m, L], S [..., L] (descending), Qh [..., L, n]
    with L = min(m, n, r) and U @ D = P diag(S) Qh.
    """
    Qu, Ru = torch.linalg.qr(U)  # [m, a], [a, r], a = min(m, r)
    Qd, Rd = torch.linalg.qr(D.mT)  # [n, b], [b, r], b = min(n, r)
    core = Ru @ Rd.mT  # [a, b]
    Pc, S, Qch = torch.linalg.svd(core, full_matrices=False)
    return Qu @ Pc, S, Qch @ Qd.mT


def dense_topk_svd(W: Tensor, k: int, *, exact: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Top-k singular triplets of W [..., m, n]: P [..., m, k], S [..., k], Qh [..., k, n].

    Randomised (range finder with power iterations) when k + oversampling is well below min(m, n)
    and `exact` is False; otherwise a full thin SVD, which is the exact Eckart–Young optimum.
    """
    m, n = W.shape[-2], W.shape[-1]
    k = min(k, m, n)
    q = k + _OVERSAMPLE
    if not exact and 2 * q <= min(m, n):
        # svd_lowrank works on the tall orientation internally; it returns V, not Vh.
        P, S, V = torch.svd_lowrank(W, q=q, niter=_POWER_ITERS)
        return P[..., :k], S[..., :k], V[..., :k].mT
    P, S, Qh = torch.linalg.svd(W, full_matrices=False)
    return P[..., :k], S[..., :k], Qh[..., :k, :]


def is_negligible(s0: float, reference: float) -> bool:
    """True when the largest singular value is zero or mere rounding noise relative to `reference`."""
    return not math.isfinite(s0) or s0 <= 0.0 or s0 <= _ZERO_REL * reference


def select_rank(
    s: Sequence[float],
    max_rank: int,
    method: Optional[str] = None,
    param: Optional[float] = None,
) -> int:
    """Rank to keep from singular values `s` (descending), never above `max_rank`, at least 1.

    - None: `max_rank`.
    - "sv_ratio" (p ≥ 1): every σᵢ with σ₀/σᵢ ≤ p, so the kept spectrum's max ratio is at most p.
    - "sv_cumulative" (0 < p ≤ 1): the smallest k with Σᵢ<ₖ σᵢ / Σ σ ≥ p.
    - "sv_fro" (0 < p ≤ 1): the smallest k with ‖σ[:k]‖₂ / ‖σ‖₂ ≥ p (retained Frobenius norm).

    Unlike sd-scripts this keeps exactly the rank the criterion asks for: sd-scripts adds one more
    singular value (its k = n + 1), so e.g. its sv_fro result is never the smallest such rank.
    """
    values = [float(v) for v in s]
    if max_rank < 1:
        raise ToolError(f"rank must be at least 1, got {max_rank}")
    if not values or values[0] <= 0.0:
        return 1
    if method is None:
        k = max_rank
    elif method == "sv_ratio":
        floor = values[0] / float(param)
        k = sum(1 for v in values if v >= floor * (1.0 - _FRACTION_TOL))
    elif method in ("sv_cumulative", "sv_fro"):
        weights = values if method == "sv_cumulative" else [v * v for v in values]
        target = float(param) if method == "sv_cumulative" else float(param) ** 2
        total = math.fsum(weights)
        k, running = len(values), 0.0
        for i, w in enumerate(weights):
            running += w
            if running >= total * (target - _FRACTION_TOL):
                k = i + 1
                break
    else:
        raise ToolError(f"unknown dynamic method {method!r}", hint=f"one of {', '.join(DYNAMIC_METHODS)}")
    return max(1, min(k, max_rank, len(values)))


def check_dynamic(method: Optional[str], param: Optional[float]) -> None:
    """Validate --dynamic_method / --dynamic_param together."""
    if method is None:
        return
    if method not in DYNAMIC_METHODS:
        raise ToolError(f"unknown dynamic method {method!r}", hint=f"one of {', '.join(DYNAMIC_METHODS)}")
    if param is None:
        raise ToolError(f"--dynamic_method {method} needs --dynamic_param")
    problem = dynamic_param_problem(method, param)
    if problem is not None:
        raise ToolError(problem[1])


def spectrum_stats(s: Sequence[float], k: int) -> tuple[float, float, float]:
    """(retained Frobenius fraction, retained sum(σ) fraction, σ₀/σₖ₋₁) for keeping the first k."""
    values = [float(v) for v in s]
    total_sq = math.fsum(v * v for v in values)
    total = math.fsum(values)
    if total_sq <= 0.0:
        return 1.0, 1.0, 1.0
    fro = math.sqrt(math.fsum(v * v for v in values[:k]) / total_sq)
    ssum = math.fsum(values[:k]) / total
    last = values[k - 1] if k - 1 < len(values) else 0.0
    ratio = values[0] / last if last > 0.0 else math.inf
    return min(fro, 1.0), min(ssum, 1.0), ratio


def clamp_to_quantile(U: Tensor, D: Tensor, quantile: Optional[float]) -> tuple[Tensor, Tensor]:
    """sd-scripts' outlier clamp: h = the `quantile` of the signed values of U and D together;
    both are clamped to [−h, h]. Batched over leading dims. quantile None or ≥ 1 disables it."""
    if quantile is None or quantile >= 1.0:
        return U, D
    lead = U.shape[:-2]
    values = torch.cat([U.reshape(*lead, -1), D.reshape(*lead, -1)], dim=-1)
    hi = upper_quantile(values, quantile).clamp_min(0.0).reshape(*lead, 1, 1)
    return torch.minimum(torch.maximum(U, -hi), hi), torch.minimum(torch.maximum(D, -hi), hi)


def upper_quantile(values: Tensor, q: float) -> Tensor:
    """torch.quantile(values, q, dim=-1) (linear interpolation) for q near 1, without a full sort:
    only the top (1 − q) fraction is selected with topk. Falls back to torch.quantile otherwise."""
    n = values.shape[-1]
    pos = q * (n - 1)
    lo = int(math.floor(pos))
    count = n - lo  # values at ascending positions lo..n-1
    if count > n // 4 + 2:
        return torch.quantile(values, q, dim=-1)
    top = values.topk(count, dim=-1, largest=True, sorted=True).values  # descending
    v_lo = top[..., count - 1]
    if count == 1:
        return v_lo
    v_hi = top[..., count - 2]
    return v_lo + (pos - lo) * (v_hi - v_lo)


def group_by(items: Iterable[T], key) -> dict:
    """Order-preserving grouping helper (used to batch same-shape modules)."""
    groups: dict = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups
