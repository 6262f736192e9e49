"""How far a slider moves the model's prediction towards B (high) or A (low): numbers, not pictures.

For each pair (A_i, B_i) with latents z_A, z_B and each fixed (noise ε, timestep t), the model predicts
the clean latent in one step, x̂0 = (x_t − √(1−ᾱ)·ε̂)/√ᾱ (from v̂ for v-prediction), with the LoRA at
weight w, from three noisy inputs x_t = √ᾱ·z + √(1−ᾱ)·ε:

- z = the midpoint m = (z_A + z_B)/2, equally far from both images. Where x̂0 lands on the axis from
  z_A to z_B shows which one the model heads for:
      position(w) = ⟨x̂0 − m, z_B − z_A⟩ / (‖z_B − z_A‖²/2)        (−1 = at A, +1 = at B)
- z = z_A and z = z_B: how well the model recovers each image, ‖x̂0 − z_A‖ and ‖x̂0 − z_B‖ (divided by
  ‖z_B − z_A‖), and the diffusion loss itself (MSE of ε̂ or v̂ against its target), which is what both
  methods train: B's loss at +w, A's at −w.

Everything is averaged over pairs, noises and timesteps. A working slider gives position(+1) >
position(−1), and fits the pairs better the right way round than swapped:
loss_high(+1) + loss_low(−1) < loss_high(−1) + loss_low(+1) (`assignment_margin` > 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from trainer.network.kohya_format import LoraFile


@dataclass
class SliderShift:
    weight: float
    position: float  # x̂0 from the midpoint, on the A→B axis: −1 = A, 0 = midpoint, +1 = B
    error_low: float  # ‖x̂0 − z_A‖ / ‖z_B − z_A‖ from noisy A
    error_high: float  # ‖x̂0 − z_B‖ / ‖z_B − z_A‖ from noisy B
    loss_low: float  # diffusion loss (MSE against the training target) on noisy A
    loss_high: float  # diffusion loss on noisy B


def assignment_margin(shifts: Sequence[SliderShift], weight: float = 1.0) -> float:
    """(loss_high(−w) + loss_low(+w)) − (loss_high(+w) + loss_low(−w)): how much better the slider fits
    B at +w and A at −w than the other way round (> 0 for a slider that learned its direction)."""
    at = {s.weight: s for s in shifts}
    plus, minus = at[weight], at[-weight]
    return (minus.loss_high + plus.loss_low) - (plus.loss_high + minus.loss_low)


@torch.no_grad()
def measure_slider(model: Any, lora: LoraFile, pairs: Sequence[tuple[Path, Path]], *, prompt: str,
                   weights: Sequence[float] = (-1.0, 0.0, 1.0), timesteps: Sequence[int] = (300, 500, 700),
                   noises: int = 2, seed: int = 0, resolution: int = 64) -> list[SliderShift]:
    """SliderShift per weight (see the module docstring). `model` is a path or a LoadedModel;
    `pairs` are (low image, high image) files, loaded at `resolution` pixels square."""
    from trainer.data import images as imageops
    from trainer.slider.preview import LoraPatch
    from trainer.tools.models import LoadedModel, load_base_model, lora_layers
    from trainer.training.noise import NoiseSchedule

    loaded = model if isinstance(model, LoadedModel) else load_base_model(model)
    family, comp = loaded.family, loaded.comp
    for part in (comp.unet, comp.vae, *comp.text_encoders):
        part.eval()
    schedule = NoiseSchedule.from_scheduler_config(comp.scheduler_config)
    generator = torch.Generator().manual_seed(seed)

    def latents(path: Path) -> torch.Tensor:
        img = imageops.load_image(path).resize((resolution, resolution))
        return comp.vae.encode(imageops.to_tensor(img)[None]).latent_dist.mean * family.latent_scale

    cases = []  # (z_low, z_high, noise, t)
    for low, high in pairs:
        z_low, z_high = latents(low), latents(high)
        for t in timesteps:
            for _ in range(noises):
                cases.append((z_low, z_high, torch.randn(z_low.shape, generator=generator), torch.tensor([t])))

    def predict(z: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, cond: dict) -> tuple[torch.Tensor, float]:
        """(x̂0, diffusion loss) from z noised with `noise` at `t`."""
        x_t = schedule.add_noise(z, noise, t)
        out = family.predict(comp, x_t, t, cond, None)
        loss = float(((out - schedule.target(z, noise, t)) ** 2).mean())
        a = schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
        if schedule.prediction_type == "v_prediction":
            return a.sqrt() * x_t - (1 - a).sqrt() * out, loss
        return (x_t - (1 - a).sqrt() * out) / a.sqrt(), loss

    patch = LoraPatch(lora_layers(loaded, conv=True), lora)
    shifts = []
    try:
        for weight in weights:
            patch.set(weight)
            cond = family.encode_prompts(comp, [prompt], clip_skip=1, max_token_length=75)
            sums = [0.0] * 5
            for z_low, z_high, noise, t in cases:
                axis = z_high - z_low
                length = float(axis.norm())
                mid = (z_low + z_high) / 2
                x0_mid, _ = predict(mid, noise, t, cond)
                x0_low, loss_low = predict(z_low, noise, t, cond)
                x0_high, loss_high = predict(z_high, noise, t, cond)
                values = (float(((x0_mid - mid) * axis).sum()) / (length * length / 2),
                          float((x0_low - z_low).norm()) / length, float((x0_high - z_high).norm()) / length,
                          loss_low, loss_high)
                sums = [a + b for a, b in zip(sums, values)]
            shifts.append(SliderShift(float(weight), *(v / len(cases) for v in sums)))
    finally:
        patch.remove()
    return shifts
