"""Stage 2 of the toy model build: the UNet and a small CLIP text encoder, trained jointly on cached latents."""

from __future__ import annotations

import copy
import random
import time
from typing import Any, Callable, Optional

import torch

from trainer.tiny import scheduler_config, tiny_unet_config
from trainer.toyworld.pretrain_vae import images_to_tensor
from trainer.toyworld.world import random_scene, render

TEXT_WIDTH = 32  # the full 49,408-token CLIP vocabulary at this width is 1.6 M parameters
CAPTION_DROPOUT = 0.1  # empty captions teach the unconditional prediction that guidance needs
MIN_SNR_GAMMA = 5.0

Snapshot = Callable[[int, Any, Any], None]


def unet_config() -> dict:
    """trainer.tiny's SD1 UNet (two levels, cross-attention at 8 x 8) with 16-wide heads and 4+ channels
    per norm group (one channel per group, as at 32 groups, normalises colour away)."""
    return {**tiny_unet_config("sd1"), "cross_attention_dim": TEXT_WIDTH, "attention_head_dim": (2, 4),
            "norm_num_groups": 8}


def text_config() -> dict:
    return dict(
        vocab_size=49408,
        hidden_size=TEXT_WIDTH,
        intermediate_size=4 * TEXT_WIDTH,
        num_attention_heads=2,
        num_hidden_layers=2,
        max_position_embeddings=77,
        projection_dim=TEXT_WIDTH,
        hidden_act="quick_gelu",
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=1,
    )


@torch.no_grad()
def encode_dataset(vae, count: int, seed: int, batch: int = 128) -> tuple[torch.Tensor, list[str]]:
    """`count` base-world scenes as scaled latents (posterior means) and their captions."""
    rng = random.Random(seed)
    scenes = [random_scene(rng) for _ in range(count)]
    latents = []
    for start in range(0, count, batch):
        x = images_to_tensor([render(s) for s in scenes[start:start + batch]])
        latents.append(vae.encode(x).latent_dist.mean * vae.config.scaling_factor)
    return torch.cat(latents), [s.caption() for s in scenes]


def train_diffusion(latents: torch.Tensor, captions: list[str], tokenizer, *, steps: int, batch_size: int,
                    seed: int, lr: float = 8e-4, ema_decay: float = 0.998,
                    log: Callable[[str], None] = print, snapshot: Optional[Snapshot] = None,
                    snapshot_every: int = 500):
    """(unet, text_encoder): the EMA weights after `steps` steps of epsilon prediction, min-SNR weighted.

    The learning rate is constant after a warm-up, so a run of N steps is the first N steps of any longer
    run: `snapshot(step, unet, text_encoder)` every `snapshot_every` steps shows what a shorter build gives.
    """
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**unet_config())
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_config()))
    ema = [copy.deepcopy(unet).eval().requires_grad_(False), copy.deepcopy(text_encoder).eval().requires_grad_(False)]
    noise_scheduler = DDPMScheduler(**{k: v for k, v in scheduler_config("sd1").items() if k != "set_alpha_to_one"})
    snr_weight = _min_snr_weights(noise_scheduler)

    table = sorted(set(captions)) + [""]
    ids_table = tokenizer(table, padding="max_length", truncation=True, max_length=77, return_tensors="pt").input_ids
    position = {caption: i for i, caption in enumerate(table)}
    caption_index = torch.tensor([position[c] for c in captions])
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 200))
    generator = torch.Generator().manual_seed(seed)
    started, running = time.time(), 0.0
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(latents), (batch_size,), generator=generator)
        cap = caption_index[idx]
        cap = torch.where(torch.rand(batch_size, generator=generator) < CAPTION_DROPOUT, len(table) - 1, cap)
        x0 = latents[idx]
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch_size,), generator=generator)
        pred = unet(noise_scheduler.add_noise(x0, noise, t), t, text_encoder(ids_table[cap])[0]).sample
        loss = ((pred - noise) ** 2).mean(dim=(1, 2, 3)).mul(snr_weight[t]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        _ema_update(ema, (unet, text_encoder), ema_decay if step > 200 else 0.0)
        running += loss.item()
        if step % 100 == 0 or step == steps:
            log(f"diffusion step {step}/{steps} loss {running / (100 if step % 100 == 0 else step % 100):.4f} "
                f"{time.time() - started:.0f} s")
            running = 0.0
        if snapshot is not None and step % snapshot_every == 0 and step < steps:
            snapshot(step, ema[0], ema[1])
    return ema[0], ema[1]


def _min_snr_weights(noise_scheduler) -> torch.Tensor:
    alphas = noise_scheduler.alphas_cumprod
    snr = alphas / (1 - alphas)
    return torch.clamp(snr, max=MIN_SNR_GAMMA) / snr


@torch.no_grad()
def _ema_update(ema_models, models, decay: float) -> None:
    for ema_model, model in zip(ema_models, models):
        for e, p in zip(ema_model.parameters(), model.parameters()):
            e.mul_(decay).add_(p.detach(), alpha=1 - decay)

