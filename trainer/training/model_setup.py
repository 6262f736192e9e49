"""The model side of a run: the base model loaded and frozen on the accelerator's device, the attention
and memory choices applied, the LoRA injected (and optionally started from a file)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainer.config import TrainConfig
from trainer.events import EventWriter
from trainer.families.base import Components, ModelFamily
from trainer.families.model_info import ModelInfo
from trainer.network.lora import LoraNetwork, NetworkSpec
from trainer.training.accel import Precision


@dataclass
class ModelSetup:
    info: ModelInfo
    family: ModelFamily
    comp: Components
    network: LoraNetwork
    train_unet: bool
    train_text_encoder: bool
    vae_dtype: torch.dtype


def attention_choice(cfg: TrainConfig) -> str:
    """'xformers', 'sdpa' or 'default' (diffusers' plain attention: the math kernel, no fused one)."""
    return "xformers" if cfg.xformers else "sdpa" if cfg.sdpa else "default"


def setup_model(cfg: TrainConfig, info: ModelInfo, family: ModelFamily, *, device: torch.device,
                precision: Precision, events: EventWriter) -> ModelSetup:
    events.emit("log", message=f"loading model {cfg.pretrained_model_name_or_path} ({info.family}"
                f"{', v-prediction' if info.v_parameterization else ''})")
    comp = family.load(cfg, info)
    train_unet = cfg.effective_unet_lr() > 0
    # A family may leave text encoders without LoRA (SDXL's per-encoder switches): then none is trained.
    train_te = cfg.effective_text_encoder_lr() > 0 and any(
        root.kind == "text_encoder" for root in family.lora_roots(comp))
    for model in (comp.unet, *comp.text_encoders, comp.vae):
        model.requires_grad_(False)
    for model in (comp.unet, *comp.text_encoders):
        model.to(device, dtype=precision.weight_dtype)
    family.set_attention(comp, attention_choice(cfg))
    if cfg.gradient_checkpointing:
        family.enable_gradient_checkpointing(comp, text_encoder=train_te)

    network = LoraNetwork.inject(family, comp, NetworkSpec.from_config(cfg), train_unet=train_unet,
                                 train_text_encoder=train_te)
    network.to(device, dtype=precision.network_dtype)
    if cfg.network_weights:
        from trainer.network.kohya_format import read_lora_file

        report = network.load_lora_file(read_lora_file(cfg.network_weights))
        events.emit("log", message=f"network weights {cfg.network_weights}: {report}")

    if cfg.torch_compile:  # in place: the module, its parameters and the LoRA's names stay as they are
        comp.unet.compile(backend=cfg.dynamo_backend)
        events.emit("log", message=f"UNet compiled with torch.compile ({cfg.dynamo_backend}): the first steps "
                    "take longer while it compiles")
    vae_dtype, note = family.vae_dtype(precision.weight_dtype, no_half_vae=cfg.no_half_vae)
    if note:
        events.emit("log", message=note)
    comp.vae.to(device, dtype=vae_dtype)  # encoding images, and decoding samples
    return ModelSetup(info, family, comp, network, train_unet, train_te, vae_dtype)
