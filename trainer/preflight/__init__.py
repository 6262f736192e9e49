"""The one pre-flight check of a TrainConfig (torch-free: the web process runs it as the user edits,
and the engine runs it before training).

`validate(cfg)` returns Findings (trainer.findings): `field` is the config field to highlight, `code`
keys the UI's translation catalog and `params` fill its template; `message` is the English text (what
is wrong, then what to do). Errors block training; warnings do not.

Each rule is a small function registered with @rule(codes) in one of the topic modules below; rules
that need the dataset share one folder scan and one step plan through the context (registry.py).
`CODES` is derived from the rules' declarations.
"""

from __future__ import annotations

from typing import Optional

from trainer.config import TrainConfig
from trainer.data.scan import DatasetScan
from trainer.findings import ERROR, WARNING, Finding, has_errors
from trainer.preflight.registry import RULES, Context, all_codes, detect_cuda, trains_text_encoder

# The topic modules register their rules on import; this order is the order of the findings.
from trainer.preflight import model, folders, outputs, training, loss, hardware, caching, resolution, samples, processes  # noqa: E402,I001,E501
from trainer.preflight.model import check_model_path, family_issues
from trainer.preflight.outputs import OUTPUT_PATH_CODES, output_name_problem, output_path_issues

CODES: tuple[str, ...] = all_codes()

__all__ = ["CODES", "ERROR", "OUTPUT_PATH_CODES", "RULES", "WARNING", "Context", "Finding", "check_model_path",
           "detect_cuda", "family_issues", "has_errors", "output_name_problem", "output_path_issues",
           "trains_text_encoder", "validate"]


def validate(cfg: TrainConfig, *, cuda_available: Optional[bool] = None,
             scan: Optional[DatasetScan] = None) -> list[Finding]:
    """Every problem found in `cfg`. `cuda_available=None` detects CUDA without importing torch."""
    ctx = Context(cfg, cuda_available=cuda_available, scan=scan)
    return [finding for r in RULES for finding in r.check(ctx)]
