"""What the tools tell the user: plain data (for the UI, `to_dict()` is JSON-ready) plus text rendering
for the CLI. The math modules fill these in; nothing here computes anything heavy."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Optional


@dataclass
class ModuleChange:
    """One output module of resize / merge / svd_merge / extract."""

    name: str
    kind: str  # "linear", "conv1x1", "conv3x3", ...
    rank_in: int  # resize: old rank; merges: summed input ranks; extract: min(out, in·k·k)
    rank: int  # rank written
    alpha: float  # alpha written (scale = alpha / rank)
    fro_retained: float  # ‖kept σ‖ / ‖all σ‖ of the target ΔW
    sum_s_retained: float  # Σ kept σ / Σ σ
    max_ratio: float  # σ₀ / σ_(rank−1); inf when the kept tail is zero
    rel_error: Optional[float] = None  # ‖ΔW_target − ΔW_written‖_F / ‖ΔW_target‖_F (clamp included)
    singular_values: list[float] = field(default_factory=list)  # of the effective (scaled) target ΔW
    note: str = ""


@dataclass
class ToolReport:
    """Result description of resize / merge / svd_merge / extract."""

    command: str
    settings: dict[str, Any]
    modules: list[ModuleChange] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "name: reason"
    info: list[str] = field(default_factory=list)  # free-form lines for the user
    output: Optional[str] = None
    elapsed_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        fro = [m.fro_retained for m in self.modules]
        errs = [m.rel_error for m in self.modules if m.rel_error is not None]
        return {
            "modules": len(self.modules),
            "skipped": len(self.skipped),
            "ranks": dict(sorted(Counter(m.rank for m in self.modules).items())),
            "mean_fro_retained": statistics.fmean(fro) if fro else None,
            "std_fro_retained": statistics.pstdev(fro) if len(fro) > 1 else 0.0 if fro else None,
            "min_fro_retained": min(fro) if fro else None,
            "max_rel_error": max(errs) if errs else None,
            "elapsed_s": self.elapsed_s,
        }

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["summary"] = self.summary()
        return _json_safe(data)

    def format_text(self, verbose: bool = False) -> str:
        lines: list[str] = []
        if verbose:
            width = max((len(m.name) for m in self.modules), default=0)
            for m in self.modules:
                line = (
                    f"{m.name:{width}} | {m.kind:7} | rank {m.rank_in:>4} -> {m.rank:<4} alpha {_num(m.alpha):>8} | "
                    f"sum(S) retained {m.sum_s_retained:6.1%} | fro retained {m.fro_retained:6.1%} | "
                    f"max(S) ratio {_ratio(m.max_ratio):>8}"
                )
                if m.rel_error is not None:
                    line += f" | rel. error {m.rel_error:.2e}"
                if m.note:
                    line += f" | {m.note}"
                lines.append(line)
        s = self.summary()
        lines.extend(self.info)
        if self.modules:
            lines.append(f"{self.command}: {s['modules']} modules written ({_ranks(s['ranks'])})")
        if s["mean_fro_retained"] is not None:
            lines.append(
                f"Frobenius norm retained: mean {s['mean_fro_retained']:.2%} ± {s['std_fro_retained']:.2%} (std), "
                f"worst {s['min_fro_retained']:.2%}"
            )
        if s["max_rel_error"] is not None:
            lines.append(f"largest relative error of a module: {s['max_rel_error']:.3e}")
        for item in self.skipped:
            lines.append(f"skipped {item}")
        for w in self.warnings:
            lines.append(f"warning: {w}")
        if self.output:
            lines.append(f"saved {self.output} ({self.elapsed_s:.1f} s)")
        return "\n".join(lines)


@dataclass
class ModuleInfo:
    """One module of an inspected file."""

    name: str
    kind: str
    out_features: int
    in_features: int
    kernel: Optional[list[int]]
    rank: int
    alpha: float
    scale: float
    dtype: str
    up_norm: float
    down_norm: float
    delta_norm: float  # ‖scale · U D‖_F, the weight change at multiplier 1
    up_abs_mean: float
    down_abs_mean: float
    zero_up: bool  # lora_up all zeros: an untrained module
    nonfinite: bool  # NaN or inf in any tensor


@dataclass
class InspectReport:
    path: Optional[str]
    metadata: dict[str, str]
    modules: list[ModuleInfo]
    problems: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        kinds = Counter(m.kind for m in self.modules)
        prefixes = Counter(m.name.split("_", 2)[1] if m.name.count("_") >= 2 else m.name for m in self.modules)
        return {
            "modules": len(self.modules),
            "by_prefix": dict(sorted(prefixes.items())),
            "by_kind": dict(sorted(kinds.items())),
            "ranks": dict(sorted(Counter(m.rank for m in self.modules).items())),
            "alphas": dict(sorted(Counter(m.alpha for m in self.modules).items())),
            "dtypes": dict(sorted(Counter(m.dtype for m in self.modules).items())),
            "zero_up": sum(m.zero_up for m in self.modules),
            "nonfinite": sum(m.nonfinite for m in self.modules),
            "max_delta_norm": max((m.delta_norm for m in self.modules), default=0.0),
        }

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["summary"] = self.summary()
        return _json_safe(data)

    def format_text(self, *, modules: bool = True, full_metadata: bool = False) -> str:
        lines: list[str] = []
        if self.path:
            lines.append(f"file: {self.path}")
        lines.append(f"metadata ({len(self.metadata)} keys):")
        for key in sorted(self.metadata):
            value = self.metadata[key]
            if not full_metadata and len(value) > 120:
                value = value[:117] + "..."
            lines.append(f"  {key}: {value}")
        if modules and self.modules:
            width = max(len(m.name) for m in self.modules)
            lines.append("modules:")
            lines.append(
                f"  {'name':{width}} | {'kind':7} | {'shape':>17} | rank | {'alpha':>7} | dtype    | "
                f"{'|ΔW|_F':>9} | {'|up|_F':>9} | {'|down|_F':>9} | flags"
            )
            for m in self.modules:
                shape = f"{m.out_features}x{m.in_features}" + (f"x{m.kernel[0]}x{m.kernel[1]}" if m.kernel else "")
                flags = ",".join(f for f, on in (("ZERO_UP", m.zero_up), ("NAN/INF", m.nonfinite)) if on)
                lines.append(
                    f"  {m.name:{width}} | {m.kind:7} | {shape:>17} | {m.rank:>4} | {_num(m.alpha):>7} | {m.dtype:8} | "
                    f"{m.delta_norm:9.3e} | {m.up_norm:9.3e} | {m.down_norm:9.3e} | {flags}"
                )
        s = self.summary()
        lines.append(
            f"{s['modules']} modules {_counts(s['by_prefix'])}; kinds {_counts(s['by_kind'])}; "
            f"{_ranks(s['ranks'])}; alphas {_counts({_num(a): n for a, n in s['alphas'].items()})}; "
            f"dtypes {_counts(s['dtypes'])}"
        )
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s):")
            lines.extend(f"  - {p}" for p in self.problems)
        else:
            lines.append("no problems found (no all-zero lora_up, no NaN/inf)")
        return "\n".join(lines)


def _num(x: float, digits: int = 4) -> str:
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x:.{digits}g}"


def _ratio(x: float) -> str:
    return "inf" if math.isinf(x) else "-" if math.isnan(x) else f"{x:.1f}"


def _ranks(ranks: dict) -> str:
    """{rank: module count} as "rank 8: 12 modules, rank 4: 3 modules"."""
    return ", ".join(f"rank {r}: {n} module{'s' if n != 1 else ''}" for r, n in ranks.items()) or "-"


def _counts(counts: dict) -> str:
    return "(" + ", ".join(f"{k}: {v}" for k, v in counts.items()) + ")"


def _json_safe(value: Any) -> Any:
    """inf/NaN are not JSON: write them as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
