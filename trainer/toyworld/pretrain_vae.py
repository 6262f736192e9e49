"""Stage 1 of the toy model build: train a small SD-layout VAE (8x down-sampling) on toy-world images."""

from __future__ import annotations

import math
import random
import time
from typing import Callable

import numpy as np
import torch

from trainer.tiny import tiny_vae_config
from trainer.toyworld.world import ALL_SHAPES, IMAGE_SIZE, random_scene, render

LATENT_CHANNELS = 4


def vae_config() -> dict:
    """trainer.tiny's SD-layout VAE (four levels, 8x down-sampling, 4 latent channels), narrower at full
    resolution, with 4+ channels per norm group: one channel per group would erase flat colours."""
    return {**tiny_vae_config(), "block_out_channels": (16, 16, 32, 32), "norm_num_groups": 4,
            "scaling_factor": 1.0}  # measured after training


def images_to_tensor(images: list) -> torch.Tensor:
    """PIL images -> (n, 3, h, w) in [-1, 1], as the engine feeds the VAE."""
    array = np.stack([np.asarray(im, dtype=np.float32) for im in images]) / 127.5 - 1.0
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


def random_batch(rng: random.Random, size: int, crop: int = IMAGE_SIZE) -> torch.Tensor:
    """Random scenes (random crops of them when crop < 64: the convolutions train 4x faster on 32 px).

    The VAE is a generic image codec: it sees stars too; only the diffusion model's world lacks them.
    """
    images = []
    for _ in range(size):
        image = render(random_scene(rng, shapes=ALL_SHAPES))
        if crop < IMAGE_SIZE:
            left, top = rng.randrange(0, IMAGE_SIZE - crop + 1, 8), rng.randrange(0, IMAGE_SIZE - crop + 1, 8)
            image = image.crop((left, top, left + crop, top + crop))
        images.append(image)
    return images_to_tensor(images)


def train_vae(*, steps: int, batch_size: int, seed: int, lr: float = 6e-4, kl_weight: float = 1e-6,
              crop_steps: float = 0.8,
              log: Callable[[str], None] = print):
    """A trained AutoencoderKL; its config's scaling_factor makes the latents' std about 1."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    rng = random.Random(seed)
    vae = AutoencoderKL(**vae_config())
    with torch.no_grad():  # start nearly deterministic: a random posterior's std ~1 would drown the means
        vae.quant_conv.weight[LATENT_CHANNELS:] = 0.0
        vae.quant_conv.bias[LATENT_CHANNELS:] = -8.0
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _warmup_cosine(s, steps, warmup=50))
    started = time.time()
    for step in range(1, steps + 1):
        if step <= crop_steps * steps:  # batch_size 32 px crops, then as many pixels in whole images
            x = random_batch(rng, batch_size, crop=IMAGE_SIZE // 2)
        else:
            x = random_batch(rng, max(1, batch_size // 4))
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        loss = torch.nn.functional.mse_loss(recon, x) + kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == steps:
            psnr = 10 * math.log10(4.0 / max(torch.nn.functional.mse_loss(recon, x).item(), 1e-10))
            log(f"vae step {step}/{steps} loss {loss.item():.5f} psnr {psnr:.1f} dB {time.time() - started:.0f} s")
    vae.eval()
    vae.register_to_config(scaling_factor=_latent_scale(vae, rng))
    return vae


@torch.no_grad()
def _latent_scale(vae, rng: random.Random) -> float:
    means = torch.cat([vae.encode(random_batch(rng, 64)).latent_dist.mean for _ in range(4)])
    return round(1.0 / means.std().item(), 5)


def _warmup_cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def reconstruction_psnr(vae, seed: int, count: int = 64) -> float:
    x = random_batch(random.Random(seed), count)
    recon = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
    return 10 * math.log10(4.0 / torch.nn.functional.mse_loss(recon, x).item())


def refine_decoder(vae, *, steps: int, batch_size: int, seed: int, lr: float = 3e-4,
                   log: Callable[[str], None] = print):
    """Train only the decoder further on whole images. The encoder is frozen, so the latents the UNet
    learns from stay exactly the same whether this stage runs before or after the diffusion stage."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    decoder_params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    optimizer = torch.optim.AdamW(decoder_params, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _warmup_cosine(s, steps, warmup=20))
    started = time.time()
    for step in range(1, steps + 1):
        x = random_batch(rng, batch_size)
        with torch.no_grad():
            latents = vae.encode(x).latent_dist.mean
        loss = torch.nn.functional.mse_loss(vae.decode(latents).sample, x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == steps:
            psnr = 10 * math.log10(4.0 / max(loss.item(), 1e-10))
            log(f"decoder step {step}/{steps} psnr {psnr:.1f} dB {time.time() - started:.0f} s")
    vae.eval()
    return vae


SD1_LATENT_SCALE = 0.18215


@torch.no_grad()
def standardise_latent_scale(vae) -> None:
    """Give the VAE SD1's scaling factor 0.18215 without changing the scaled latents it produces.

    kohya's sd-scripts, A1111 and ComfyUI use 0.18215 for every SD1 model whatever the VAE's config
    says. The encoder's means (and posterior std) are multiplied by scale/0.18215 and the decoder's first
    layer divides them back, so scaled latents and decoded images stay the same.
    """
    gain = vae.config.scaling_factor / SD1_LATENT_SCALE
    vae.quant_conv.weight[:LATENT_CHANNELS] *= gain
    vae.quant_conv.bias[:LATENT_CHANNELS] *= gain
    vae.quant_conv.bias[LATENT_CHANNELS:] += 2 * math.log(gain)  # log-variance: std scales with the means
    vae.post_quant_conv.weight /= gain
    vae.register_to_config(scaling_factor=SD1_LATENT_SCALE)
