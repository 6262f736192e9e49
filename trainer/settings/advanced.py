"""Advanced tab, first half: network options, memory and speed, buckets, augmentation and captions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional  # noqa: F401  (annotations name it)

from trainer.params import param
from trainer.settings.choices import *  # noqa: F401,F403  (the choices and checks the declarations name)


@dataclass
class AdvancedSettings:
    network_dropout: float = param(0.0, "Dropout on the LoRA down-projection output.", tab="advanced", section="network",
                                   label="Network dropout", min=0.0, max=1.0)
    rank_dropout: float = param(0.0, "Drop each rank of a LoRA module's down output with this probability per "
                                "sample while training (kohya's rank_dropout; 0 = off).", tab="advanced",
                                section="network", label="Rank dropout", min=0.0, max=1.0,
                                sd_scripts="network_args_if_set")
    module_dropout: float = param(0.0, "Skip a whole LoRA module with this probability at each training forward "
                                  "pass (kohya's module_dropout; 0 = off).", tab="advanced", section="network",
                                  label="Module dropout", min=0.0, max=1.0, sd_scripts="network_args_if_set")
    ema_decay: float = param(0.0, "EMA of the LoRA weights: the saved files and the samples use their moving "
                             "average (0 = off; 0.999 is common). The decay ramps up over the first updates.",
                             tab="advanced", section="ema", label="EMA decay", min=0.0, max=0.99999, sd_scripts=False)
    ema_start_step: int = param(0, "Optimizer step the average starts at (before it, it follows the weights).",
                                tab="advanced", section="ema", label="EMA start step", min=0, max=10_000_000,
                                sd_scripts=False)
    ema_update_every: int = param(1, "Update the average every N optimizer steps.", tab="advanced", section="ema",
                                  label="EMA update every N steps", min=1, max=10_000, sd_scripts=False)
    ema_save_non_ema: bool = param(False, "Also save each LoRA with the raw (non-EMA) weights, as "
                                   "<file>-non_ema.safetensors.", tab="advanced", section="ema",
                                   label="Also save non-EMA weights", sd_scripts=False)
    network_train_unet_only: bool = param(False, "Train only the UNet LoRA.", tab="advanced", section="network",
                                          label="Train UNet only")
    network_train_text_encoder_only: bool = param(False, "Train only the text-encoder LoRA.", tab="advanced", section="network",
                                                  label="Train text encoder only")
    network_train_text_encoder_1: bool = param(
        True, "SDXL only: give text encoder 1 (CLIP ViT-L) a LoRA when the text encoder is trained. "
        "Off: that encoder stays as it is and is not saved in the file.",
        tab="advanced", section="network", label="Train text encoder 1 (SDXL)", sd_scripts=False)
    network_train_text_encoder_2: bool = param(
        True, "SDXL only: give text encoder 2 (OpenCLIP ViT-bigG) a LoRA when the text encoder is trained. "
        "Off: that encoder stays as it is and is not saved in the file.",
        tab="advanced", section="network", label="Train text encoder 2 (SDXL)", sd_scripts=False)
    scale_weight_norms: float = param(0.0, "Max-norm regularisation of each LoRA module (0 = off, 1 is typical).",
                                      tab="advanced", section="network", label="Scale weight norms", min=0.0, max=10.0)
    gradient_accumulation_steps: int = param(1, "Accumulate gradients over N batches per optimizer step.",
                                             tab="advanced", section="memory", label="Gradient accumulation steps", min=1, max=120)
    gradient_checkpointing: bool = param(False, "Recompute activations in the backward pass: less memory, slower.",
                                         tab="advanced", section="memory", label="Gradient checkpointing")
    sdpa: bool = param(True, "Use PyTorch scaled-dot-product attention.", tab="advanced", section="memory", label="SDPA attention")
    xformers: bool = param(False, "Use xformers memory-efficient attention (CUDA only, optional package).",
                           tab="advanced", section="memory", label="xformers attention")
    fp8_base: bool = param(False, "Store the frozen base model's linear, convolution and embedding weights in fp8 "
                           "(float8_e4m3fn), each cast up only for its own layer's computation. With gradient "
                           "checkpointing about half the model's memory in bf16/fp16; a little slower.", tab="advanced",
                           section="memory", label="fp8 base model")
    torch_compile: bool = param(False, "Compile the UNet with torch.compile: the first steps take minutes, the "
                                "rest run faster (mostly on a GPU).", tab="advanced", section="memory",
                                label="Torch compile")
    dynamo_backend: str = param("inductor", "torch.compile backend (inductor generates fused kernels; eager and "
                                "aot_eager only check that the model compiles).", tab="advanced", section="memory",
                                label="Dynamo backend", choices=("inductor", "aot_eager", "eager", "cudagraphs"))
    full_fp16: bool = param(False, "Keep the LoRA weights in fp16 too (needs mixed precision fp16).",
                            tab="advanced", section="memory", label="Full fp16 training")
    full_bf16: bool = param(False, "Keep the LoRA weights in bf16 too (needs mixed precision bf16).",
                            tab="advanced", section="memory", label="Full bf16 training")
    no_half_vae: bool = param(
        True, "Run the VAE in fp32 under mixed precision (avoids NaN latents and black samples, needs a little "
        "more memory). Off: the VAE runs in fp16/bf16, except SDXL's VAE with fp16, which overflows and "
        "always runs in fp32.", tab="advanced", section="memory", label="No half VAE")
    cache_text_encoder_outputs: bool = param(
        False, "Encode every caption once before training and move the text encoders off the GPU (saves "
        "memory, mostly for SDXL). Needs a frozen text encoder ('Train UNet only' or text-encoder learning "
        "rate 0) and captions that do not change (no shuffling, no caption dropout).",
        tab="advanced", section="memory", label="Cache text encoder outputs")
    cache_text_encoder_outputs_to_disk: bool = param(
        False, "Also keep the cached text-encoder outputs in <image>_te_outputs.npz files beside the images, "
        "reused by later runs with the same model and captions (turns caching on).",
        tab="advanced", section="memory", label="Cache text encoder outputs to disk")
    max_data_loader_n_workers: int = param(0, "Data loader worker processes (0 = load in the main process).",
                                           tab="advanced", section="memory", label="Max data loader workers", min=0, max=64)
    persistent_data_loader_workers: bool = param(False, "Keep data loader workers alive between epochs.",
                                                 tab="advanced", section="memory", label="Persistent data loader workers")
    bucket_reso_steps: int = param(64, "Bucket sides are multiples of this many pixels.", tab="advanced", section="buckets",
                                   label="Bucket resolution steps", min=8, max=256)
    bucket_no_upscale: bool = param(False, "Never upscale small images to fill a bucket.", tab="advanced", section="buckets",
                                    label="Don't upscale bucket resolution")
    color_aug: bool = param(False, "Random hue shifts (disables latent caching).", tab="advanced", section="captions",
                            label="Color augmentation")
    flip_aug: bool = param(False, "Random horizontal flips.", tab="advanced", section="captions", label="Flip augmentation")
    random_crop: bool = param(False, "Random instead of centred crops (disables latent caching).", tab="advanced", section="captions",
                              label="Random crop")
    shuffle_caption: bool = param(False, "Shuffle the comma-separated tags of each caption.", tab="advanced", section="captions",
                                  label="Shuffle caption")
    keep_tokens: int = param(0, "Keep the first N comma-separated tags in place when shuffling.", tab="advanced", section="captions",
                             label="Keep n tokens", min=0, max=32)
    caption_dropout_rate: float = param(0.0, "Probability of training an image with an empty caption.",
                                        tab="advanced", section="captions", label="Rate of caption dropout", min=0.0, max=1.0)
    caption_dropout_every_n_epochs: int = param(0, "Drop all captions every N epochs (0 = never).", tab="advanced", section="captions",
                                                label="Dropout caption every n epochs", min=0, max=10000)
    max_token_length: int = param(75, "Longest caption in tokens (longer captions are encoded in 75-token chunks).",
                                  tab="advanced", section="captions", label="Max token length", choices=(75, 150, 225),
                                  sd_scripts="unless_default")
