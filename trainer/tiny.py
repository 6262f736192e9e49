"""Tiny random-weight models with the real Stable Diffusion layouts, and demo images.

Tests and the CPU demo use these: no weights can be downloaded on the machines this
project is built on, but a model whose module tree and key names match SD1.x / SD2.x / SDXL
exercises every real code path (loading, LoRA injection, kohya key names, sampling).

The tiny SDXL keeps every structural feature that decides SGM block indices and key names: three
down blocks (the first without attention), two layers per block, transformer depth (1, 1, 2), linear
proj_in, the `text_time` size/crop embedding, and two text encoders of different widths (a
CLIPTextModel and a CLIPTextModelWithProjection, whose projection width differs from its hidden width).

    python -m trainer.tiny --family sd1 --out models/tiny-sd1            # diffusers folder
    python -m trainer.tiny --family sd2-v --out models/tiny.safetensors  # single file
    python -m trainer.tiny --family sdxl --out models/tiny-sdxl.safetensors
    python -m trainer.tiny --demo demo/                                  # model + images
"""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path

from trainer.families.tokenizers import load_clip_tokenizer

FAMILIES = ("sd1", "sd2", "sd2-v", "sdxl")

# Tiny SDXL text encoders: CLIP-L stand-in 32 wide, OpenCLIP-bigG stand-in 64 wide with a 32-wide
# projection. diffusers tells the two single-file text encoders apart by their widths.
SDXL_TE1_WIDTH = 32
SDXL_TE2_WIDTH = 64
SDXL_TE2_PROJECTION = 32
SDXL_TIME_EMBED_DIM = 8


def tiny_unet_config(family: str) -> dict:
    if family == "sdxl":
        return tiny_sdxl_unet_config()
    v2 = family.startswith("sd2")
    return dict(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=(2, 4) if v2 else 8,
        use_linear_projection=v2,
        norm_num_groups=32,
    )


def tiny_sdxl_unet_config() -> dict:
    return dict(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1, 2),
        attention_head_dim=(2, 4, 8),
        use_linear_projection=True,
        cross_attention_dim=SDXL_TE1_WIDTH + SDXL_TE2_WIDTH,
        addition_embed_type="text_time",
        addition_time_embed_dim=SDXL_TIME_EMBED_DIM,
        # six size/crop numbers, each embedded in addition_time_embed_dim, plus the pooled text embedding
        projection_class_embeddings_input_dim=6 * SDXL_TIME_EMBED_DIM + SDXL_TE2_PROJECTION,
        norm_num_groups=32,
    )


def tiny_vae_config(family: str = "sd1") -> dict:
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
        scaling_factor=0.13025 if family == "sdxl" else 0.18215,
    )


def tiny_text_config(family: str, *, index: int = 0) -> dict:
    """The text encoder config; for SDXL, index 1 is the second (OpenCLIP-bigG-like) encoder."""
    if family == "sdxl":
        width = SDXL_TE2_WIDTH if index == 1 else SDXL_TE1_WIDTH
        return dict(
            vocab_size=49408,
            hidden_size=width,
            intermediate_size=width + 5,
            num_attention_heads=4,
            num_hidden_layers=5,
            max_position_embeddings=77,
            projection_dim=SDXL_TE2_PROJECTION if index == 1 else width,
            hidden_act="gelu" if index == 1 else "quick_gelu",
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=1,
        )
    v2 = family.startswith("sd2")
    return dict(
        vocab_size=49408,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=5,
        max_position_embeddings=77,
        projection_dim=32,
        hidden_act="gelu" if v2 else "quick_gelu",
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=1,
    )


def scheduler_config(family: str) -> dict:
    return dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="v_prediction" if family == "sd2-v" else "epsilon",
    )


def calibrate_tiny_vae(vae, *, mean_gain: float = 20.0) -> None:
    """Give a random VAE the latent statistics of a real SD VAE.

    A random encoder's posterior has std ~1 around means of ~0.27, so its "latents" are mostly
    sampling noise. Real SD latents have std ~1 after the 0.18215 scale and a nearly
    deterministic posterior. Scaling the means (and undoing it in the decoder) and pinning the
    log-variance low makes the tiny models train like real ones.
    """
    import torch

    with torch.no_grad():
        vae.quant_conv.weight[:4] *= mean_gain
        vae.quant_conv.bias[:4] *= mean_gain
        vae.quant_conv.weight[4:] = 0.0
        vae.quant_conv.bias[4:] = -10.0  # posterior std e^-5
        vae.post_quant_conv.weight /= mean_gain


def build_tiny_pipeline(family: str = "sd1", seed: int = 0):
    """A StableDiffusionPipeline (StableDiffusionXLPipeline for "sdxl") of random weights with the family's layout."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}")
    torch.manual_seed(seed)
    if family == "sdxl":
        return _build_tiny_sdxl_pipeline()
    unet = UNet2DConditionModel(**tiny_unet_config(family))
    vae = AutoencoderKL(**tiny_vae_config())
    calibrate_tiny_vae(vae)
    text_encoder = CLIPTextModel(CLIPTextConfig(**tiny_text_config(family)))
    # Real SD checkpoints have non-zero norm biases; random init leaves them at 0, which would
    # make the v-prediction heuristic (std of a norm bias, as real 768-v models show) meaningless.
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if name.endswith("norm1.bias") and "transformer_blocks" in name:
                p.normal_(0.0, 0.2 if family == "sd2-v" else 0.02)
    tokenizer = load_clip_tokenizer(pad_token="!" if family.startswith("sd2") else "<|endoftext|>")
    scheduler = DDIMScheduler(**scheduler_config(family))
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _build_tiny_sdxl_pipeline():
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    unet = UNet2DConditionModel(**tiny_sdxl_unet_config())
    vae = AutoencoderKL(**tiny_vae_config("sdxl"))
    calibrate_tiny_vae(vae)
    text_encoder = CLIPTextModel(CLIPTextConfig(**tiny_text_config("sdxl", index=0)))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**tiny_text_config("sdxl", index=1)))
    with torch.no_grad():  # non-zero norm biases, as in real checkpoints (see build_tiny_pipeline)
        for name, p in unet.named_parameters():
            if name.endswith("norm1.bias") and "transformer_blocks" in name:
                p.normal_(0.0, 0.02)
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=load_clip_tokenizer(pad_token="<|endoftext|>"),
        tokenizer_2=load_clip_tokenizer(pad_token="!"),  # OpenCLIP pads with token 0 ("!")
        unet=unet,
        scheduler=EulerDiscreteScheduler.from_config({**scheduler_config("sdxl"), "timestep_spacing": "leading"}),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )


def save_tiny_model(dest: Path, family: str = "sd1", seed: int = 0) -> Path:
    """Write a tiny model as a diffusers folder, or as a single file when dest ends in .safetensors."""
    dest = Path(dest)
    pipe = build_tiny_pipeline(family, seed)
    if dest.suffix in (".safetensors", ".ckpt"):
        from trainer.families.single_file import save_single_file

        save_single_file(pipe, dest, family=family)
    else:
        pipe.save_pretrained(dest, safe_serialization=True)
    return dest


# ---- demo images ------------------------------------------------------------------
def _draw_shape_image(size: tuple[int, int], rng: random.Random, radius_frac: float):
    from PIL import Image, ImageDraw

    w, h = size
    bg = tuple(rng.randint(150, 255) for _ in range(3))
    img = Image.new("RGB", size, bg)
    draw = ImageDraw.Draw(img)
    r = radius_frac * min(w, h) / 2
    cx = w / 2 + rng.uniform(-0.1, 0.1) * w
    cy = h / 2 + rng.uniform(-0.1, 0.1) * h
    color = (rng.randint(150, 230), rng.randint(0, 60), rng.randint(0, 60))
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
    return img


def make_image_folder(folder: Path, count: int, *, sizes: list[tuple[int, int]] | None = None,
                      caption: str | None = None, caption_extension: str = ".txt",
                      radius_frac: float = 0.6, seed: int = 0) -> list[Path]:
    """Write `count` PNG images of a red disc (and optional captions) into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    sizes = sizes or [(64, 64)]
    paths = []
    for i in range(count):
        img = _draw_shape_image(sizes[i % len(sizes)], rng, radius_frac)
        path = folder / f"img_{i:03d}.png"
        img.save(path)
        if caption is not None:
            path.with_suffix(caption_extension).write_text(caption, encoding="utf-8")
        paths.append(path)
    return paths


def make_demo(root: Path) -> dict[str, Path]:
    """Create the CPU demo: a tiny SD1 model and a small captioned image set under `root`."""
    root = Path(root)
    model = root / "tiny-sd1"
    if not (model / "model_index.json").exists():
        save_tiny_model(model, "sd1")
    img_dir = root / "img" / "10_sks disc"
    if not img_dir.exists():
        make_image_folder(img_dir, 4, sizes=[(64, 64), (64, 64), (96, 64), (64, 96)],
                          caption="sks disc, red circle", seed=1)
    return {"model": model, "train_data_dir": root / "img"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=FAMILIES, default="sd1")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--demo", type=Path, help="create the demo model and images under this folder")
    args = ap.parse_args()
    if args.demo:
        for k, v in make_demo(args.demo).items():
            print(f"{k}: {v}")
    elif args.out:
        print(save_tiny_model(args.out, args.family, args.seed))
    else:
        ap.error("give --out or --demo")


if __name__ == "__main__":
    main()
