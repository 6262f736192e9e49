"""The metadata stored in a trained LoRA file: sd-scripts' `ss_*` keys and the SAI model spec.

Values follow what sd-scripts' train_network.py writes when launched by the kohya_ss GUI: every value
a string, Python `str()` of the argument with sd-scripts' type (so "True", "None", "1.0" for a float
argument, "8" for an int one, "(512, 512)"), JSON where
sd-scripts uses JSON (dataset dirs, tag frequency, bucket info, network args). A1111's metadata
viewer, civitai and sd-scripts' own tools read these keys.

The hashes (`sshs_*`, `modelspec.hash_sha256`) depend on the tensors and are added by
`kohya_format.write_lora_file`. Torch-free.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from trainer.config import TrainConfig
from trainer.families.traits import FamilyTraits, family_traits

NETWORK_MODULE = "networks.lora"
SAI_MODEL_SPEC_VERSION = "1.0.1"


@dataclass
class RunInfo:
    """What the run knows beyond the config (counts, dataset summary, detected model)."""

    session_id: Union[str, int] = ""
    training_started_at: float = 0.0
    training_finished_at: Optional[float] = None  # None: now
    epoch: int = 0
    steps: int = 0
    max_train_steps: int = 0
    num_epochs: int = 0
    num_batches_per_epoch: int = 0
    num_train_images: int = 0  # images x repeats
    num_reg_images: int = 0
    dataset_dirs: dict[str, dict[str, int]] = field(default_factory=dict)  # {dir: {n_repeats, img_count}}
    reg_dataset_dirs: dict[str, dict[str, int]] = field(default_factory=dict)
    tag_frequency: dict[str, dict[str, int]] = field(default_factory=dict)  # {dir: {tag: count}}
    bucket_info: Optional[dict] = None  # {"buckets": {i: {"resolution": (w, h), "count": n}}, "mean_img_ar_error": x}
    base_model_version: str = ""  # "sd_v1" | "sd_v2" | "sd_v2_v" | "sdxl_base_v1-0"; from v2/v_param if empty
    modelspec_architecture: str = ""  # the base model's ("stable-diffusion-v1"; "/lora" is added); derived if empty
    modelspec_implementation: str = ""  # "diffusers" if empty; SDXL: the generative-models URL (sd-scripts' value)
    optimizer: str = ""  # e.g. "torch.optim.adamw.AdamW(weight_decay=0.01)"; from the config if empty
    lr_warmup_steps: Optional[int] = None  # resolved step count; the config value if None
    total_batch_size: Optional[int] = None  # batch size x gradient accumulation if None
    v2: Optional[bool] = None  # detected; the config's flags if None
    v_parameterization: Optional[bool] = None
    sd_model_hash: Optional[str] = None  # base model file hashes (trainer.network.hashes), if computed
    new_sd_model_hash: Optional[str] = None


def _num(value: float) -> str:
    """A number as sd-scripts' int-or-float arguments print: 1 -> "1", 0.5 -> "0.5"."""
    return str(int(value)) if float(value).is_integer() else str(float(value))


def _opt_float(value: Optional[float]) -> Optional[float]:
    return None if value is None else float(value)


def _model_name(path: str) -> str:
    """sd-scripts stores the base name of a local model, or the id as given."""
    return os.path.basename(os.path.normpath(path)) if path and os.path.exists(path) else path


def base_model_version(v2: bool, v_parameterization: bool) -> str:
    return _sd_traits(v2, v_parameterization).base_model_version


def modelspec_architecture(v2: bool, v_parameterization: bool) -> str:
    """The base model's architecture id (sd-scripts' names)."""
    return _sd_traits(v2, v_parameterization).modelspec_architecture


def _sd_traits(v2: bool, v_parameterization: bool) -> FamilyTraits:
    """SD 1.x / 2.x, as sd-scripts' --v2 and --v_parameterization flags say."""
    return family_traits("sd2" if v2 else "sd1", bool(v_parameterization))


def lora_architecture(base_architecture: str) -> str:
    """sd-scripts writes `<base>/lora` (the spec's README spells `<base>-lora`; consumers read sd-scripts')."""
    return base_architecture if base_architecture.endswith("/lora") else f"{base_architecture}/lora"


def network_args(cfg: TrainConfig) -> Optional[dict[str, Any]]:
    """sd-scripts' `--network_args` as the kohya_ss GUI passes them (strings), plus the `dropout`
    entry train_network.py adds before it stores them. None for a standard LoRA without LoRA+ (no key)."""
    args: dict[str, Any] = {}
    if cfg.uses_conv_lora():
        args.update(conv_dim=str(cfg.conv_dim), conv_alpha=_num(cfg.conv_alpha))
    for name in ("rank_dropout", "module_dropout", "loraplus_lr_ratio", "loraplus_unet_lr_ratio",
                 "loraplus_text_encoder_lr_ratio"):
        if getattr(cfg, name):
            args[name] = _num(getattr(cfg, name))
    if not args:
        return None
    return {**args, "dropout": cfg.network_dropout}


def loss_metadata(cfg: TrainConfig) -> dict[str, Any]:
    """The loss options, as sd-scripts stores them (the Huber keys only with a Huber loss), and the EMA's."""
    keys: dict[str, Any] = {
        "ss_zero_terminal_snr": cfg.zero_terminal_snr,
        "ss_ip_noise_gamma": float(cfg.ip_noise_gamma) if cfg.ip_noise_gamma else None,
        "ss_ip_noise_gamma_random_strength": cfg.ip_noise_gamma_random_strength,
        "ss_debiased_estimation": cfg.debiased_estimation_loss,
        "ss_loss_type": cfg.loss_type,
        "ss_scale_v_pred_loss_like_noise_pred": cfg.scale_v_pred_loss_like_noise_pred,
        "ss_v_pred_like_loss": float(cfg.v_pred_like_loss) if cfg.v_pred_like_loss else None,
        "ss_masked_loss": cfg.masked_loss,
        "ss_alpha_mask": cfg.alpha_mask,
    }
    if cfg.ema_decay:  # not an sd-scripts option: our own keys, beside its ss_* ones
        keys.update(ss_ema_decay=float(cfg.ema_decay), ss_ema_start_step=cfg.ema_start_step,
                    ss_ema_update_every=cfg.ema_update_every)
    if cfg.loss_type in ("huber", "smooth_l1"):
        keys.update(ss_huber_schedule=cfg.huber_schedule, ss_huber_c=float(cfg.huber_c),
                    ss_huber_scale=float(cfg.huber_scale))
    return keys


def build_training_metadata(cfg: TrainConfig, info: RunInfo) -> dict[str, str]:
    v2 = cfg.v2 if info.v2 is None else info.v2
    v_param = cfg.v_parameterization if info.v_parameterization is None else info.v_parameterization
    finished = time.time() if info.training_finished_at is None else info.training_finished_at
    width, height = cfg.resolution_wh()
    multires = cfg.noise_offset_type == "Multires"
    optimizer = info.optimizer or cfg.optimizer_type + (f"({cfg.optimizer_args})" if cfg.optimizer_args else "")

    ss: dict[str, Any] = {
        "ss_session_id": info.session_id,
        "ss_training_started_at": info.training_started_at,
        "ss_training_finished_at": finished,
        "ss_output_name": cfg.output_name,
        "ss_learning_rate": float(cfg.learning_rate),
        "ss_text_encoder_lr": _opt_float(cfg.text_encoder_lr),
        "ss_unet_lr": _opt_float(cfg.unet_lr),
        "ss_num_train_images": info.num_train_images,
        "ss_num_reg_images": info.num_reg_images,
        "ss_num_batches_per_epoch": info.num_batches_per_epoch,
        "ss_num_epochs": info.num_epochs,
        "ss_epoch": info.epoch,
        "ss_steps": info.steps,
        "ss_max_train_steps": info.max_train_steps,
        "ss_gradient_checkpointing": cfg.gradient_checkpointing,
        "ss_gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "ss_lr_warmup_steps": info.lr_warmup_steps if info.lr_warmup_steps is not None else _num(cfg.lr_warmup_steps),
        "ss_lr_scheduler": cfg.lr_scheduler,
        "ss_network_module": NETWORK_MODULE,
        "ss_network_dim": cfg.network_dim,
        "ss_network_alpha": float(cfg.network_alpha),
        "ss_network_dropout": float(cfg.network_dropout),
        "ss_mixed_precision": cfg.mixed_precision,
        "ss_full_fp16": cfg.full_fp16,
        "ss_v2": bool(v2),
        "ss_base_model_version": info.base_model_version or base_model_version(v2, v_param),
        "ss_clip_skip": cfg.clip_skip,
        "ss_max_token_length": cfg.max_token_length,
        "ss_cache_latents": cfg.cache_latents,
        "ss_seed": cfg.seed,
        "ss_lowram": False,
        # The kohya_ss GUI passes only the chosen kind of noise offset, and None for a zero one.
        "ss_noise_offset": float(cfg.noise_offset) if not multires and cfg.noise_offset else None,
        "ss_multires_noise_iterations": (cfg.multires_noise_iterations
                                         if multires and cfg.multires_noise_iterations else None),
        "ss_multires_noise_discount": float(cfg.multires_noise_discount) if multires else None,
        "ss_adaptive_noise_scale": None,
        "ss_training_comment": cfg.training_comment,
        "ss_optimizer": optimizer,
        "ss_max_grad_norm": float(cfg.max_grad_norm),
        "ss_caption_dropout_rate": float(cfg.caption_dropout_rate),
        "ss_caption_dropout_every_n_epochs": cfg.caption_dropout_every_n_epochs,
        "ss_caption_tag_dropout_rate": 0.0,
        "ss_face_crop_aug_range": None,
        "ss_prior_loss_weight": float(cfg.prior_loss_weight),
        "ss_min_snr_gamma": float(cfg.min_snr_gamma) if cfg.min_snr_gamma else None,
        "ss_scale_weight_norms": float(cfg.scale_weight_norms),
        "ss_noise_offset_random_strength": False,
        "ss_fp8_base": False,
        # dataset (folder mode)
        "ss_batch_size_per_device": cfg.train_batch_size,
        "ss_total_batch_size": info.total_batch_size or cfg.train_batch_size * cfg.gradient_accumulation_steps,
        "ss_resolution": (width, height),
        "ss_color_aug": cfg.color_aug,
        "ss_flip_aug": cfg.flip_aug,
        "ss_random_crop": cfg.random_crop,
        "ss_shuffle_caption": cfg.shuffle_caption,
        "ss_enable_bucket": cfg.enable_bucket,
        "ss_bucket_no_upscale": cfg.bucket_no_upscale,
        "ss_min_bucket_reso": cfg.min_bucket_reso,
        "ss_max_bucket_reso": cfg.max_bucket_reso,
        "ss_keep_tokens": cfg.keep_tokens,
        "ss_dataset_dirs": json.dumps(info.dataset_dirs),
        "ss_reg_dataset_dirs": json.dumps(info.reg_dataset_dirs),
        "ss_tag_frequency": json.dumps(info.tag_frequency),
        "ss_bucket_info": json.dumps(info.bucket_info),
        "ss_sd_model_name": _model_name(cfg.pretrained_model_name_or_path),
    }
    ss.update(loss_metadata(cfg))
    args = network_args(cfg)
    if args is not None:
        ss["ss_network_args"] = json.dumps(args)
    if info.sd_model_hash:
        ss["ss_sd_model_hash"] = info.sd_model_hash
    if info.new_sd_model_hash:
        ss["ss_new_sd_model_hash"] = info.new_sd_model_hash
    if cfg.vae:
        ss["ss_vae_name"] = _model_name(cfg.vae)

    spec: dict[str, Optional[str]] = {
        "modelspec.sai_model_spec": SAI_MODEL_SPEC_VERSION,
        "modelspec.architecture": lora_architecture(info.modelspec_architecture
                                                    or modelspec_architecture(v2, v_param)),
        "modelspec.implementation": info.modelspec_implementation or "diffusers",
        "modelspec.title": cfg.metadata_title or cfg.output_name,
        "modelspec.author": cfg.metadata_author or None,
        "modelspec.description": cfg.metadata_description or None,
        "modelspec.license": cfg.metadata_license or None,
        "modelspec.tags": cfg.metadata_tags or None,
        "modelspec.date": datetime.datetime.fromtimestamp(int(finished)).isoformat(),
        "modelspec.resolution": f"{width}x{height}",
        "modelspec.prediction_type": "v" if v_param else "epsilon",
        "modelspec.timestep_range": f"{cfg.min_timestep},{cfg.max_timestep}",
        "modelspec.encoder_layer": str(cfg.clip_skip),
    }
    metadata = {k: str(v) for k, v in ss.items()}
    metadata.update({k: v for k, v in spec.items() if v is not None})
    return metadata
