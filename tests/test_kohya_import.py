"""kohya_ss GUI configs: blanks keep defaults, the SDXL block is mapped, xformers fits the machine."""

from __future__ import annotations

import json

import pytest

from trainer.config import TrainConfig
from trainer.kohya_import import import_kohya_config

DEFAULTS = TrainConfig()


def test_blank_values_mean_default():
    kohya = {"LoRA_type": "Standard", "lr_scheduler_num_cycles": "", "lr_scheduler_power": "", "max_grad_norm": "",
             "caption_extension": "", "output_name": "", "max_resolution": "", "xformers": "", "vae": "",
             "seed": "", "keep_tokens": None, "max_timestep": 0, "sample_every_n_epochs": "", "unet_lr": ""}
    cfg, unmapped = import_kohya_config(kohya)
    assert unmapped == []
    for name in ("lr_scheduler_num_cycles", "lr_scheduler_power", "max_grad_norm", "caption_extension",
                 "output_name", "resolution", "xformers", "sdpa", "seed", "keep_tokens", "max_timestep", "unet_lr"):
        assert getattr(cfg, name) == getattr(DEFAULTS, name), name


@pytest.mark.parametrize("no_half_vae", [False, True])
def test_sdxl_block_is_mapped_when_sdxl_is_ticked(no_half_vae):
    kohya = {"LoRA_type": "Standard", "sdxl": True, "sdxl_no_half_vae": no_half_vae,
             "sdxl_cache_text_encoder_outputs": True, "text_encoder_lr": 0}
    cfg, unmapped = import_kohya_config(kohya)
    assert unmapped == []
    assert cfg.no_half_vae is no_half_vae and cfg.cache_text_encoder_outputs


def test_sdxl_block_is_ignored_without_sdxl():
    # kohya_ss passes these to sd-scripts only with its SDXL checkbox ticked
    cfg, unmapped = import_kohya_config({"LoRA_type": "Standard", "sdxl": False, "sdxl_no_half_vae": False,
                                         "sdxl_cache_text_encoder_outputs": True})
    assert unmapped == []
    assert cfg.no_half_vae == DEFAULTS.no_half_vae and not cfg.cache_text_encoder_outputs


def test_real_kohya_lora_tab_fields_all_land():
    """A kohya_ss LoRA-tab config whose fields all have an equivalent here: nothing is reported."""
    kohya = {"LoRA_type": "Kohya LoCon", "epoch": 3, "max_train_epochs": "", "max_train_steps": 0,
             "optimizer": "Prodigy", "optimizer_args": "", "max_resolution": "768,768", "lr_warmup": 5,
             "lr_warmup_steps": 0, "network_dim": 16, "network_alpha": 8, "conv_dim": 4, "conv_alpha": 2,
             "xformers": "sdpa", "train_batch_size": 2, "save_every_n_epochs": 1, "mixed_precision": "bf16",
             "save_precision": "bf16", "cache_latents": True, "cache_latents_to_disk": False, "clip_skip": 2,
             "gradient_checkpointing": True, "gradient_accumulation_steps": 2, "min_snr_gamma": 5,
             "noise_offset_type": "Multires", "multires_noise_iterations": 6, "multires_noise_discount": 0.3,
             "shuffle_caption": True, "keep_tokens": 1, "caption_dropout_rate": 0.05, "flip_aug": True,
             "bucket_reso_steps": 64, "min_bucket_reso": 256, "max_bucket_reso": 2048, "enable_bucket": True,
             "lr_scheduler": "cosine_with_restarts", "lr_scheduler_num_cycles": 3, "scale_weight_norms": 1,
             "network_dropout": 0.1, "text_encoder_lr": 5e-5, "unet_lr": 1e-4, "learning_rate": 1e-4,
             "sample_every_n_epochs": 1, "sample_sampler": "euler_a", "sample_prompts": "a cat --w 512",
             "max_token_length": 150, "prior_loss_weight": 1, "min_timestep": 0, "max_timestep": 1000,
             "sdxl": False, "v2": False, "v_parameterization": False, "model_list": "custom"}
    cfg, unmapped = import_kohya_config(kohya)
    assert unmapped == []
    assert (cfg.lora_type, cfg.conv_dim, cfg.conv_alpha, cfg.optimizer_type) == ("LoCon", 4, 2.0, "Prodigy")
    assert (cfg.max_train_epochs, cfg.lr_warmup_steps, cfg.lr_scheduler_num_cycles) == (3, 0.05, 3)
    assert cfg.sdpa and not cfg.xformers and cfg.max_token_length == 150


def test_kohya_loss_and_loraplus_fields_are_mapped():
    kohya = {"loss_type": "smooth_l1", "huber_schedule": "exponential", "huber_c": 0.2, "huber_scale": 1.5,
             "debiased_estimation_loss": True, "ip_noise_gamma": 0.1, "ip_noise_gamma_random_strength": True,
             "scale_v_pred_loss_like_noise_pred": False, "v_pred_like_loss": 0.3, "loraplus_lr_ratio": 16,
             "loraplus_unet_lr_ratio": "", "loraplus_text_encoder_lr_ratio": 4, "LoRA_type": "Standard"}
    cfg, unmapped = import_kohya_config(kohya)
    assert unmapped == []
    assert (cfg.loss_type, cfg.huber_schedule, cfg.huber_c, cfg.huber_scale) == ("smooth_l1", "exponential", 0.2, 1.5)
    assert cfg.debiased_estimation_loss and cfg.ip_noise_gamma == 0.1 and cfg.ip_noise_gamma_random_strength
    assert cfg.v_pred_like_loss == 0.3 and cfg.loraplus_ratio("unet") == 16.0 and cfg.loraplus_ratio("text_encoder") == 4.0


def test_xformers_from_kohya_is_switched_to_sdpa_without_cuda(tmp_path, monkeypatch):
    from lora_gui import presets
    from lora_gui.form import FIELDS
    from lora_gui.tabs import config_bar

    monkeypatch.setattr(config_bar, "xformers_usable", lambda: False)
    (tmp_path / "k.json").write_text(json.dumps({"LoRA_type": "Standard", "xformers": "xformers"}), encoding="utf-8")
    loaded = presets.read_preset_file(tmp_path / "k.json")
    assert loaded.config.xformers  # the import keeps what the file says ...
    values = dict(zip((s.name for s in FIELDS), config_bar._values(loaded)))
    assert values["xformers"] is False and values["sdpa"] is True  # ... the page fits it to this machine
    assert "SDPA" in config_bar._loaded_message(loaded, "k.json", "en", "")
