"""The rule registry and what the rules share (the config, CUDA, one folder scan, one step plan).

A rule is a small function of a `Context` that yields Findings, registered with `@rule(codes...)`
naming every code it may emit: the list of codes the UI's catalogs must translate is derived from
these declarations (`all_codes()`). Rules run in registration order, which is the order the page lists
their findings in.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Iterable, Optional

from trainer.config import TrainConfig, parse_resolution
from trainer.data.scan import DatasetScan, scan_dataset
from trainer.data.steps import StepPlan, plan_steps
from trainer.families.model_info import ModelInfo
from trainer.families.traits import FamilyTraits, known_traits
from trainer.findings import ERROR, WARNING, Finding
from trainer.machine import cuda_likely as detect_cuda  # the one torch-free guess, shared with the form

__all__ = ["ERROR", "WARNING", "Context", "Rule", "RULES", "all_codes", "detect_cuda", "issue", "rule",
           "trains_text_encoder"]


class Context:
    """What the rules share: the config, CUDA availability, and the (lazily built) scan and plan."""

    def __init__(self, cfg: TrainConfig, *, cuda_available: Optional[bool] = None,
                 scan: Optional[DatasetScan] = None):
        self.cfg = cfg
        self.cuda = detect_cuda() if cuda_available is None else cuda_available
        if scan is not None:
            self.__dict__["scan"] = scan  # pre-fills the cached_property below

    @cached_property
    def scan(self) -> DatasetScan:
        return scan_dataset(self.cfg)

    @cached_property
    def model_info(self) -> Optional["ModelInfo"]:
        """The base model as detected without loading it (the engine reuses it), or None when unusable."""
        try:
            from trainer.families.detect import detect_model

            return detect_model(self.cfg.pretrained_model_name_or_path)
        except Exception:  # a missing or broken model is reported by the model_path rule
            return None

    @property
    def family(self) -> Optional[str]:
        """The base model's family ("sd1", "sd2", "sdxl") when it can be told without loading, else None."""
        return self.model_info.family if self.model_info is not None else None

    @property
    def traits(self) -> Optional[FamilyTraits]:
        """The family's traits, or None while the family is unknown."""
        return known_traits(self.family)

    @cached_property
    def resolution(self) -> Optional[tuple[int, int]]:
        try:
            return parse_resolution(self.cfg.resolution)
        except ValueError:
            return None

    @cached_property
    def plan(self) -> Optional[StepPlan]:
        """The step plan, or None when the settings or folders do not allow one."""
        cfg = self.cfg
        if self.resolution is None or cfg.bucket_reso_steps < 1 or not self.scan.train.subsets:
            return None
        try:
            return plan_steps(cfg, self.scan)
        except (ValueError, ZeroDivisionError):
            return None


Check = Callable[[Context], Iterable[Finding]]


@dataclass(frozen=True)
class Rule:
    check: Check
    codes: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.check.__name__


RULES: list[Rule] = []


def rule(*codes: str) -> Callable[[Check], Check]:
    """Registers a rule that may emit `codes` (every one of them; tests check the declaration)."""
    if not codes or not all(isinstance(c, str) and c for c in codes):
        raise TypeError("@rule needs the codes the rule may emit, e.g. @rule(\"alpha_above_rank\")")

    def register(check: Check) -> Check:
        RULES.append(Rule(check, tuple(codes)))
        return check

    return register


def all_codes() -> tuple[str, ...]:
    """Every code a registered rule may emit, in rule order, each once."""
    return tuple(dict.fromkeys(code for r in RULES for code in r.codes))


def issue(field: str, level: str, code: str, message: str, **params) -> Finding:
    return Finding(field, level, code, message, params=params)


def trains_text_encoder(cfg: TrainConfig, family: Optional[str]) -> bool:
    """Whether a text-encoder LoRA is trained: a text-encoder learning rate above 0 and, for a family with
    per-encoder switches (SDXL), at least one of them on (an unknown family counts as having one encoder)."""
    if cfg.effective_text_encoder_lr() <= 0:
        return False
    traits = known_traits(family)
    if traits and traits.text_encoder_switches:
        return any(getattr(cfg, switch) for switch in traits.text_encoder_switches)
    return True
