"""Sample images during training, with kohya's prompt syntax (parsed by trainer.prompts).

Every model part, tokenizers included, comes from the loaded Components, so a sample is conditioned
exactly as training is (a diffusers folder's own tokenizer, clip_skip, long prompts).
"""

from __future__ import annotations

import logging
import random
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence, Union

from trainer.fileio import atomic_write_with
from trainer.config import SAMPLER_SCHEDULERS
from trainer.prompts import SAMPLER_ALIASES, SAMPLERS, SamplePrompt, parse_prompt_line, parse_prompts, sampler_name

if TYPE_CHECKING:
    import torch

    from trainer.families.base import Components, ModelFamily

logger = logging.getLogger(__name__)
__all__ = ["SAMPLERS", "SamplePrompt", "parse_prompts", "parse_prompt_line", "make_sampler", "generate_samples",
           "sample_file_name"]


# ---- samplers ---------------------------------------------------------------------------------
def make_sampler(name: str, scheduler_config: dict):
    """A diffusers scheduler for a kohya sampler name, from the model's training schedule.

    The config carries prediction_type, so v-prediction models sample correctly with every sampler.
    """
    import diffusers

    name = SAMPLER_ALIASES.get(name, name)
    if name not in SAMPLER_SCHEDULERS:
        raise ValueError(f"Unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    class_name, overrides = SAMPLER_SCHEDULERS[name]
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
    """The prompt's --ss sampler; the pre-flight refuses unknown names, so the fallback is for direct callers."""
    if not name:
        return default
    known = sampler_name(name)
    if known is None:
        logger.warning("Unknown sampler %r in a sample prompt; using %s", name, default)
        return default
    return known


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
