"""Parameters tab: batch, epochs, saving cadence, precision, caching, optimizer, learning rates,
scheduler, resolution and buckets, the network type, rank and alpha."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional  # noqa: F401  (annotations name it)

from trainer.params import param
from trainer.settings.choices import *  # noqa: F401,F403  (the choices and checks the declarations name)


@dataclass
class ParameterSettings:
    train_batch_size: int = param(1, "Images per step. Larger needs more memory.", tab="parameters",
                                  label="Train batch size", min=1, max=64)
    max_train_epochs: int = param(10, "Number of epochs (passes over all images x repeats).", tab="parameters",
                                  label="Max train epochs", min=1, max=10000)
    max_train_steps: int = param(0, "Total optimizer steps; overrides epochs when above 0.", tab="parameters",
                                 label="Max train steps", min=0, max=10_000_000)
    save_every_n_epochs: int = param(1, "Save a LoRA every N epochs (0 = only at the end).", tab="parameters",
                                     label="Save every N epochs", min=0, max=10000)
    caption_extension: str = param(".txt", "Extension of caption files next to the images (.txt, .caption or .cap).", tab="parameters",
                                   label="Caption file extension")
    seed: int = param(42, "Random seed; the same seed and settings give the same run.", tab="parameters",
                      label="Seed", min=0, max=2**32 - 1)
    mixed_precision: str = param("fp16", "Compute precision. fp16/bf16 need a GPU; on a CPU fp32 (no) is used.",
                                 tab="parameters", label="Mixed precision", choices=PRECISIONS)
    cache_latents: bool = param(True, "Encode every image with the VAE once before training (faster, less memory).",
                                tab="parameters", label="Cache latents")
    cache_latents_to_disk: bool = param(False, "Keep cached latents in .npz files beside the images for later runs.",
                                        tab="parameters", label="Cache latents to disk")
    lr_scheduler: str = param("cosine", "How the learning rate changes over the run.", tab="parameters",
                              label="LR scheduler", choices=LR_SCHEDULERS)
    optimizer_type: str = param("AdamW", "Optimizer. 8bit variants need bitsandbytes and save memory.",
                                tab="parameters", label="Optimizer", choices=OPTIMIZERS)
    optimizer_args: str = param("", "Extra optimizer arguments as key=value pairs, e.g. weight_decay=0.01 betas=0.9,0.99.",
                                tab="parameters", label="Optimizer extra arguments")
    learning_rate: float = param(1e-4, "Base learning rate (used where UNet/text-encoder rates are blank).",
                                 tab="parameters", label="Learning rate", min=0.0, max=10.0)
    unet_lr: Optional[float] = param(None, "UNet learning rate. Blank = learning rate; 0 = do not train the UNet.",
                                     tab="parameters", label="UNet learning rate", min=0.0, max=10.0)
    text_encoder_lr: Optional[float] = param(
        None, "Text-encoder learning rate. Blank = learning rate; 0 = do not train the text encoder.",
        tab="parameters", label="Text encoder learning rate", min=0.0, max=10.0)
    lr_warmup_steps: float = param(0, "Warmup steps: a whole number of steps, or a fraction (<1) of total steps.",
                                   tab="parameters", label="LR warmup steps", min=0.0, max=1_000_000,
                                   check=check_warmup_steps)
    lr_scheduler_num_cycles: int = param(1, "Restarts for cosine_with_restarts.", tab="parameters",
                                         label="LR number of cycles", min=1, max=1000)
    lr_scheduler_power: float = param(1.0, "Power of the polynomial scheduler.", tab="parameters",
                                      label="LR power", min=0.0, max=100.0)
    max_grad_norm: float = param(1.0, "Clip gradients to this norm (0 = no clipping).", tab="parameters",
                                 label="Max grad norm", min=0.0, max=1000.0)
    resolution: str = param("512", "Training resolution: \"512\" or \"width,height\".", tab="parameters",
                            label="Max resolution", check=parse_resolution)
    enable_bucket: bool = param(True, "Group images by aspect ratio instead of cropping all to a square.",
                                tab="parameters", label="Enable buckets")
    min_bucket_reso: int = param(256, "Smallest bucket side in pixels.", tab="parameters",
                                 label="Minimum bucket resolution", min=64, max=4096, step=64)
    max_bucket_reso: int = param(1024, "Largest bucket side in pixels.", tab="parameters",
                                 label="Maximum bucket resolution", min=64, max=4096, step=64)
    lora_type: str = param("Standard", "Standard LoRA (attention and MLP layers) or LoCon (also the 3x3 convolutions).",
                           tab="parameters", label="LoRA type", choices=("Standard", "LoCon"),
                           sd_scripts="network_module")
    network_dim: int = param(8, "LoRA rank (dimension). Larger learns more detail and makes bigger files.",
                             tab="parameters", label="Network rank (dimension)", min=1, max=1024)
    network_alpha: float = param(1.0, "LoRA alpha; the update is scaled by alpha / rank.", tab="parameters",
                                 label="Network alpha", min=0.0, max=1024.0)
    conv_dim: int = param(4, "Rank of the 3x3 convolution LoRA (LoCon only).", tab="parameters",
                          label="Convolution rank (dimension)", min=1, max=1024,
                          sd_scripts="network_args")
    conv_alpha: float = param(1.0, "Alpha of the 3x3 convolution LoRA (LoCon only).", tab="parameters",
                              label="Convolution alpha", min=0.0, max=1024.0,
                              sd_scripts="network_args")
    loraplus_lr_ratio: float = param(0.0, "LoRA+: the up matrices learn at learning rate x this ratio (0 = off; "
                                     "16 is the paper's value).", tab="parameters", label="LoRA+ LR ratio",
                                     min=0.0, max=128.0, sd_scripts="network_args_if_set")
    loraplus_unet_lr_ratio: float = param(0.0, "LoRA+ ratio of the UNet (0 = the LoRA+ LR ratio).",
                                          tab="parameters", label="LoRA+ UNet LR ratio", min=0.0, max=128.0,
                                          sd_scripts="network_args_if_set")
    loraplus_text_encoder_lr_ratio: float = param(0.0, "LoRA+ ratio of the text encoder (0 = the LoRA+ LR ratio).",
                                                  tab="parameters", label="LoRA+ text encoder LR ratio", min=0.0,
                                                  max=128.0, sd_scripts="network_args_if_set")
    network_weights: str = param("", "Start from an existing LoRA file (weights only).", tab="parameters",
                                 label="Network weights", widget="path", accept=LORA_SUFFIXES)
