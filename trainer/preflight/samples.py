"""Pre-flight rules of the sample images: cadence and prompts."""

from __future__ import annotations

from typing import Iterator

from trainer.findings import Finding
from trainer.preflight.registry import WARNING, Context, issue, rule
from trainer.prompts import read_prompts


@rule("sample_prompts_without_cadence", "sample_cadence_without_prompts")
def sample_cadence(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    has_prompts = bool(cfg.sample_prompts.strip())
    has_cadence = cfg.sample_every_n_steps > 0 or cfg.sample_every_n_epochs > 0 or cfg.sample_at_first
    if has_prompts and not has_cadence:
        yield issue("sample_every_n_epochs", WARNING, "sample_prompts_without_cadence",
                    "Sample prompts are set, but no samples will be made. Set 'Sample every n epochs' or "
                    "'Sample every n steps' (or turn on 'Sample before training').")
    elif has_cadence and not has_prompts:
        yield issue("sample_prompts", WARNING, "sample_cadence_without_prompts",
                    "Sampling is on, but there are no sample prompts, so no samples will be made. "
                    "Write one prompt per line.")


@rule("sample_prompt_file_missing", "sample_prompt_file_unreadable", "sample_prompt_file_empty",
       "sample_prompt_unknown_option", "sample_prompt_option_empty", "sample_prompt_not_a_number",
       "sample_prompt_out_of_range", "sample_prompt_unknown_sampler")
def sample_prompt_lines(ctx: Context) -> Iterator[Finding]:
    """Every problem of the sample prompts (or their file), with the line and the option, before training:
    the sampler itself falls back to defaults mid-run (as sd-scripts does)."""
    if not ctx.cfg.sample_prompts.strip():
        return
    for found in read_prompts(ctx.cfg.sample_prompts).problems:
        code = found.code  # one of the sample_prompt_* codes declared above, set in trainer.prompts
        yield issue("sample_prompts", found.level, code, found.message, **found.params)
