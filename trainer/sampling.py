"""Sample images during training, with kohya's prompt syntax.

A prompt file (or text) has one prompt per line; empty lines and lines starting with `#` are skipped.
Options follow the prompt as ` --x value`:
    --n negative prompt    --w width   --h height (rounded down to a multiple of 8, at least 64)
    --s steps (default 30, 1..1000)    --l CFG scale (7.5)    --d seed    --ss sampler
e.g. `a red disc on a table --n blurry --w 512 --h 768 --s 20 --l 7 --d 42 --ss ddim`.
"""

from __future__ import annotations

import logging
import random
import re
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence, Union

from trainer.fileio import atomic_write_with

if TYPE_CHECKING:
    import torch

    from trainer.families.base import Components, ModelFamily

logger = logging.getLogger(__name__)

DEFAULT_SIZE = 512
DEFAULT_STEPS = 30
DEFAULT_CFG_SCALE = 7.5
SAMPLERS = ("ddim", "euler", "euler_a", "dpmsolver++", "pndm", "lms", "heun", "dpm_2", "dpm_2_a")
# Other names sd-scripts accepts for the same samplers.
SAMPLER_ALIASES = {"k_euler": "euler", "k_euler_a": "euler_a", "k_lms": "lms", "k_dpm_2": "dpm_2",
                   "k_dpm_2_a": "dpm_2_a", "dpmsolver": "dpmsolver++"}


@dataclass
class SamplePrompt:
    prompt: str
    negative: str = ""
    width: int = DEFAULT_SIZE
    height: int = DEFAULT_SIZE
    steps: int = DEFAULT_STEPS
    cfg_scale: float = DEFAULT_CFG_SCALE
    seed: Optional[int] = None
    sampler: Optional[str] = None


_OPTIONS = {  # option -> (SamplePrompt field, value pattern); case-insensitive like sd-scripts
    "w": ("width", r"(\d+)"),
    "h": ("height", r"(\d+)"),
    "s": ("steps", r"(\d+)"),
    "l": ("cfg_scale", r"([\d.]+)"),
    "d": ("seed", r"(\d+)"),
    "n": ("negative", r"(.+)"),
    "ss": ("sampler", r"(.+)"),
}


def parse_prompts(text: str) -> list[SamplePrompt]:
    """Prompts from kohya prompt text, or from a .txt prompt file when `text` is such a path."""
    source = text.strip()
    if source and "\n" not in source and source.lower().endswith(".txt"):
        path = Path(source).expanduser()
        if not path.is_file():
            logger.warning("Sample prompt file not found: %s", path)
            return []
        source = path.read_text(encoding="utf-8")
    prompts = []
    for line in source.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            prompts.append(parse_prompt_line(line))
    return prompts


def parse_prompt_line(line: str) -> SamplePrompt:
    """One prompt line; unknown options are ignored, as sd-scripts does."""
    prompt, *options = line.split(" --")
    values: dict[str, Any] = {}
    for option in options:
        name, _, value = option.partition(" ")
        spec = _OPTIONS.get(name.lower())
        match = spec and re.fullmatch(spec[1], value.strip())
        if not match:
            if name.strip():
                logger.warning("Ignoring sample prompt option --%s", option.strip())
            continue
        field, raw = spec[0], match.group(1).strip()
        try:
            if field in ("negative", "sampler"):
                values[field] = raw
            else:
                values[field] = float(raw) if field == "cfg_scale" else int(raw)
        except ValueError:
            logger.warning("Ignoring sample prompt option --%s (bad value)", option.strip())
    sample = SamplePrompt(prompt=prompt.strip(), **values)
    sample.width = max(64, sample.width - sample.width % 8)
    sample.height = max(64, sample.height - sample.height % 8)
    sample.steps = max(1, min(1000, sample.steps))
    return sample


# ---- samplers ---------------------------------------------------------------------------------
def make_sampler(name: str, scheduler_config: dict):
    """A diffusers scheduler for a kohya sampler name, from the model's training schedule.

    The config carries prediction_type, so v-prediction models sample correctly with every sampler.
    """
    import diffusers

    name = SAMPLER_ALIASES.get(name, name)
    classes = {
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
    if name not in classes:
        raise ValueError(f"Unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    class_name, overrides = classes[name]
    cls = getattr(diffusers, class_name)
    if name == "lms" and not diffusers.utils.is_scipy_available():
        cls = _lms_without_scipy()
    return cls.from_config({**scheduler_config, **overrides})


def _lms_without_scipy():
    """LMSDiscreteScheduler whose coefficient integral does not need scipy (not a dependency here).

    The integrand is a Lagrange basis polynomial in the noise level, so numpy integrates it exactly
    where diffusers calls scipy's numerical quadrature.
    """
    # Without scipy the top-level diffusers.LMSDiscreteScheduler is a placeholder; the module has the class.
    from diffusers.schedulers.scheduling_lms_discrete import LMSDiscreteScheduler
    from numpy.polynomial import Polynomial

    class LMSDiscreteSchedulerNumpy(LMSDiscreteScheduler):
        def get_lms_coefficient(self, order: int, t: int, current_order: int) -> float:
            sigmas = [float(s) for s in self.sigmas]
            basis = Polynomial([1.0])
            for k in range(order):
                if k != current_order:
                    basis *= Polynomial([-sigmas[t - k], 1.0]) / (sigmas[t - current_order] - sigmas[t - k])
            antiderivative = basis.integ()
            return float(antiderivative(sigmas[t + 1]) - antiderivative(sigmas[t]))

    return LMSDiscreteSchedulerNumpy


# ---- generation -------------------------------------------------------------------------------
def sample_file_name(output_name: str, index: int, seed: int, *, step: int, epoch: Optional[int] = None) -> str:
    """`<output_name>_<e000001 | 000123>_<NN>_<seed>.png`: the epoch when sampling at an epoch end, else the step."""
    when = f"e{epoch:06d}" if epoch is not None else f"{step:06d}"
    return f"{output_name}_{when}_{index:02d}_{seed}.png"


def generate_samples(
    family: "ModelFamily",
    comp: "Components",
    prompts: Union[str, Sequence[SamplePrompt]],
    *,
    out_dir: Union[str, Path],
    output_name: str,
    step: int,
    epoch: Optional[int] = None,
    sampler: str = "euler_a",
    device: Union[str, "torch.device", None] = None,
    dtype: Optional["torch.dtype"] = None,
    clip_skip: int = 1,
    max_token_length: int = 75,
    base_seed: int = 0,
) -> list[Path]:
    """Generate one PNG per prompt with the models in memory (LoRA layers included) and return the paths.

    Files are named `<out_dir>/<output_name>_<when>_<NN>_<seed>.png`, where <when> is `e` + the epoch
    in 6 digits when `epoch` is given (sampling at an epoch end) and otherwise the 6-digit step, <NN>
    is the prompt's index (2 digits) and <seed> its seed: `--d`, else `base_seed + index`, so every
    sampling event draws the same noise for a prompt. Example: `mylora_e000002_00_42.png`,
    `mylora_000500_01_1.png`.

    The global torch (CPU and CUDA), numpy and Python RNG states are restored afterwards, so sampling
    does not change the training run; the models are put in eval mode and restored module by module.
    """
    import torch

    if isinstance(prompts, str):
        prompts = parse_prompts(prompts)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device) if device is not None else next(comp.unet.parameters()).device
    models = [comp.unet, comp.vae, *comp.text_encoders]
    paths = []
    with _preserved_rng_state(), _eval_mode(models), _on_device(comp.vae, device), torch.no_grad():
        for index, sample in enumerate(prompts):
            name = _sampler_name(sample.sampler, default=sampler)
            seed = sample.seed if sample.seed is not None else base_seed + index
            pipe = family.sampling_pipeline(comp, name)
            kwargs = family.sampling_kwargs(comp, sample.prompt, sample.negative, clip_skip=clip_skip,
                                            max_token_length=max_token_length)
            with _autocast(device, dtype):
                image = pipe(
                    **kwargs,
                    width=sample.width,
                    height=sample.height,
                    num_inference_steps=sample.steps,
                    guidance_scale=sample.cfg_scale,
                    # A CPU generator gives the same image for a seed on every device.
                    generator=torch.Generator("cpu").manual_seed(seed),
                    output_type="pil",
                ).images[0]
            path = out_dir / sample_file_name(output_name, index, seed, step=step, epoch=epoch)
            atomic_write_with(path, lambda tmp: image.save(tmp, format="PNG"))
            paths.append(path)
    return paths


def _sampler_name(name: Optional[str], *, default: str) -> str:
    if not name:
        return default
    name = SAMPLER_ALIASES.get(name.strip().lower(), name.strip().lower())
    if name not in SAMPLERS:
        logger.warning("Unknown sampler %r in a sample prompt; using %s", name, default)
        return default
    return name


@contextmanager
def _preserved_rng_state() -> Iterator[None]:
    import numpy as np
    import torch

    python_state, numpy_state = random.getstate(), np.random.get_state()
    cuda_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=cuda_devices):  # restores CPU and CUDA generators
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


@contextmanager
def _eval_mode(models: list) -> Iterator[None]:
    # Remember every submodule: the loop may keep some parts in eval (e.g. a frozen text encoder).
    modes = [(m, m.training) for model in models for m in model.modules()]
    for model in models:
        model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@contextmanager
def _on_device(module: Any, device: "torch.device") -> Iterator[None]:
    """Keep `module` on `device` for the block (the VAE may be parked on the CPU after latent caching)."""
    original = next(module.parameters()).device
    if original == device:
        yield
        return
    module.to(device)
    try:
        yield
    finally:
        module.to(original)


def _autocast(device: "torch.device", dtype: Optional["torch.dtype"]):
    import torch

    # Mixed-precision weights (e.g. an fp16 UNet beside an fp32 VAE) need autocast, as in training.
    if dtype is None or dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)
