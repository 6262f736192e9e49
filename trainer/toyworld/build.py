"""`python -m trainer.toyworld build`: pretrain the toy model (VAE, then UNet + text encoder) and save it.

Seeded, with fixed step counts: the same command reproduces the shipped model (bit-exact on the same
torch build and thread count; the build uses one thread). Stage results are kept in a work folder, so an
interrupted build continues after the VAE.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

@dataclass(frozen=True)
class BuildPlan:
    seed: int = 0
    vae_steps: int = 1500
    vae_batch: int = 32       # 32 px crops; whole 64 px images for the last fifth, as many pixels
    decoder_steps: int = 1500
    decoder_batch: int = 12
    scenes: int = 16000       # cached latents of the base world
    diffusion_steps: int = 2000
    diffusion_batch: int = 32


def build(out: Path, plan: BuildPlan, work: Path, log: Callable[[str], None] = print) -> dict:
    """Train the toy model into the diffusers folder `out` (fp16); returns the build report."""
    import torch

    torch.set_num_threads(1)  # determinism, and the fastest setting on a shared 2-core machine
    from diffusers import AutoencoderKL

    from trainer.toyworld.pretrain_diffusion import encode_dataset, train_diffusion
    from trainer.toyworld.pretrain_vae import reconstruction_psnr, refine_decoder, standardise_latent_scale, train_vae

    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    vae_dir = work / f"vae-seed{plan.seed}-steps{plan.vae_steps}"
    if (vae_dir / "config.json").is_file():
        vae = AutoencoderKL.from_pretrained(vae_dir)
        log(f"reusing the VAE in {vae_dir}")
    else:
        vae = train_vae(steps=plan.vae_steps, batch_size=plan.vae_batch, seed=plan.seed, log=log)
        vae.save_pretrained(vae_dir)
    log(f"VAE: {reconstruction_psnr(vae, seed=plan.seed + 1):.1f} dB PSNR, latent scale {vae.config.scaling_factor}")
    decoder_dir = work / f"{vae_dir.name}-decoder{plan.decoder_steps}"
    if (decoder_dir / "config.json").is_file():
        vae = AutoencoderKL.from_pretrained(decoder_dir)
        log(f"reusing the refined decoder in {decoder_dir}")
    else:
        vae = refine_decoder(vae, steps=plan.decoder_steps, batch_size=plan.decoder_batch, seed=plan.seed + 4, log=log)
        vae.save_pretrained(decoder_dir)
    standardise_latent_scale(vae)
    vae_seconds = time.time() - started
    psnr = reconstruction_psnr(vae, seed=plan.seed + 1)
    log(f"VAE with the refined decoder: {psnr:.1f} dB PSNR")

    latents, captions = encode_dataset(vae, plan.scenes, seed=plan.seed + 2)
    tokenizer = _tokenizer()

    def snapshot(step: int, unet, text_encoder) -> None:
        save_model(work / "snapshots" / f"step{step:05d}", vae, unet, text_encoder, tokenizer)

    unet, text_encoder = train_diffusion(latents, captions, tokenizer, steps=plan.diffusion_steps,
                                         batch_size=plan.diffusion_batch, seed=plan.seed + 3, log=log,
                                         snapshot=snapshot)
    save_model(out, vae, unet, text_encoder, tokenizer)
    report = dict(plan=asdict(plan), vae_psnr_db=round(psnr, 2), vae_seconds=round(vae_seconds),
                  total_seconds=round(time.time() - started))
    (out / "build.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    log(f"saved {out} in {report['total_seconds']} s")
    return report


def save_model(out: Path, vae, unet, text_encoder, tokenizer) -> Path:
    """Write the components as a standard SD1 diffusers folder with fp16 safetensors weights (copies are
    cast). The folder is built under a temporary name and renamed, so a failed save leaves no half model."""
    import copy
    import shutil

    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from trainer.families.tokenizers import CLIP_BPE_DIR
    from trainer.tiny import scheduler_config

    vae, unet, text_encoder = (copy.deepcopy(m) for m in (vae, unet, text_encoder))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=DDIMScheduler(**scheduler_config("sd1")), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    pipe.to(torch.float16).save_pretrained(partial, safe_serialization=True)
    # The BPE files (1.5 MB) instead of transformers' tokenizer.json (3.6 MB): the same tokenizer, smaller.
    (partial / "tokenizer" / "tokenizer.json").unlink(missing_ok=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(CLIP_BPE_DIR / name, partial / "tokenizer" / name)
    partial.rename(out)
    return out


def _tokenizer():
    from trainer.families.tokenizers import load_clip_tokenizer

    return load_clip_tokenizer()
