"""The choices, checks and constants the parameter declarations name (torch-free)."""

from __future__ import annotations

from typing import Any

from trainer.families.model_info import MODEL_FILE_SUFFIXES
from trainer.params import FOLDER, LORA_SUFFIXES  # noqa: F401  (re-exported for the declarations)

FORMAT_VERSION = 1
MODEL_ACCEPTS = FOLDER + MODEL_FILE_SUFFIXES  # a base model or VAE: a diffusers folder or one file
# format_version v -> v + 1 (trainer.params.read_values applies them to older presets)
MIGRATIONS: dict = {}

# Tabs and sections in kohya_ss order. The UI arranges fields by these names.
TABS = ("source_model", "folders", "parameters", "advanced", "samples")


LR_SCHEDULERS = (
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "adafactor",
)
OPTIMIZERS = (
    "AdamW",
    "AdamW8bit",
    "PagedAdamW8bit",
    "Lion",
    "Lion8bit",
    "SGDNesterov",
    "SGDNesterov8bit",
    "Adafactor",
    "Prodigy",
    "DAdaptAdam",
    "CAME",
)
# kohya's sampler names -> the diffusers scheduler class (by name: this module stays torch-free) and the
# config values that sampler needs. The one definition: the form's choices and the sampler both read it.
SAMPLER_SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "lms": ("LMSDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm_2": ("KDPM2DiscreteScheduler", {}),
    "dpm_2_a": ("KDPM2AncestralDiscreteScheduler", {}),
}
SAMPLERS = tuple(SAMPLER_SCHEDULERS)
PRECISIONS = ("no", "fp16", "bf16")
LOSS_TYPES = ("l2", "l1", "huber", "smooth_l1")
HUBER_SCHEDULES = ("constant", "exponential", "snr")
SAVE_PRECISIONS = ("float", "fp16", "bf16")


def parse_resolution(text: str) -> tuple[int, int]:
    """'512' -> (512, 512); '512,768' -> (512, 768) as (width, height)."""
    parts = [p.strip() for p in str(text).replace("x", ",").split(",") if p.strip()]
    if len(parts) not in (1, 2):
        raise ValueError(f"resolution must be \"512\" or \"width,height\", got {text!r}")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"resolution must be whole numbers, got {text!r}") from None
    if any(n < 64 or n > 8192 for n in nums):
        raise ValueError(f"resolution sides must be between 64 and 8192, got {text!r}")
    return (nums[0], nums[-1])


def check_warmup_steps(value: float) -> None:
    """lr_warmup_steps: a whole number of steps, or a fraction of the run below 1."""
    if value >= 1 and not float(value).is_integer():
        raise ValueError("must be a whole number of steps, or a fraction below 1")
