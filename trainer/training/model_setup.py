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

    if cfg.fp8_base:
        count = store_base_in_fp8([comp.unet, *comp.text_encoders], compute_dtype=precision.weight_dtype)
        events.emit("log", message=f"fp8 base: {count} frozen layers stored in float8_e4m3fn, computed in "
                    f"{str(precision.weight_dtype).removeprefix('torch.')}")
    if cfg.torch_compile:  # in place: the module, its parameters and the LoRA's names stay as they are
        comp.unet.compile(backend=cfg.dynamo_backend)
        events.emit("log", message=f"UNet compiled with torch.compile ({cfg.dynamo_backend}): the first steps "
                    "take longer while it compiles")
    vae_dtype, note = family.vae_dtype(precision.weight_dtype, no_half_vae=cfg.no_half_vae)
    if note:
        events.emit("log", message=note)
    comp.vae.to(device, dtype=vae_dtype)  # encoding images, and decoding samples
    return ModelSetup(info, family, comp, network, train_unet, train_te, vae_dtype)


class _StoredInFp8(torch.nn.Module):
    """A weight parametrization: kept as float8_e4m3fn, seen by its layer as `compute_dtype`."""

    def __init__(self, compute_dtype: torch.dtype):
        super().__init__()
        self.compute_dtype = compute_dtype

    def forward(self, stored: torch.Tensor) -> torch.Tensor:
        return stored.to(self.compute_dtype)

    def right_inverse(self, weight: torch.Tensor) -> tuple[torch.Tensor]:
        return (weight.to(torch.float8_e4m3fn),)  # a tuple: parametrize allows a change of dtype only so


def store_base_in_fp8(models: list[torch.nn.Module], *, compute_dtype: torch.dtype) -> int:
    """sd-scripts' fp8_base: each frozen linear and convolution weight is stored in float8_e4m3fn and cast to
    `compute_dtype` whenever its layer uses it; norms, embeddings and the LoRA (peft's `lora_*`) stay as
    they are. Returns the number of layers stored in fp8.

    Written here because the libraries' ways do not fit training: diffusers' layerwise casting swaps each
    weight's data back to fp8 after the forward, under the tensor autograd saved for the backward (it is made
    for inference), and autocast's casting (what sd-scripts relies on) exists only under CUDA mixed precision.
    A parametrization gives the backward the cast copy it used, in every precision."""
    from torch.nn.utils import parametrize

    count = 0
    for model in models:
        for name, module in model.named_modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and "lora_" not in name \
                    and not module.weight.requires_grad:
                parametrize.register_parametrization(module, "weight", _StoredInFp8(compute_dtype), unsafe=True)
                module.parametrizations.weight.original0.requires_grad_(False)
                count += 1
    return count
