import json

import pytest

from trainer.config import ConfigError, TrainConfig, parse_resolution
from trainer.kohya_import import import_kohya_config, load_any_config


def test_round_trip_json(tmp_path):
    cfg = TrainConfig(network_dim=16, unet_lr=2e-4, resolution="512,768", sample_prompts="a\nb --w 64")
    path = tmp_path / "p.json"
    cfg.save(path)
    data = json.loads(path.read_text())
    assert data["format_version"] == 1
    assert TrainConfig.load(path) == cfg


def test_every_field_has_help_and_tab():
    for f in TrainConfig.fields():
        assert f.metadata["help"], f.name
        assert f.metadata["tab"] in ("source_model", "folders", "parameters", "advanced", "samples"), f.name


@pytest.mark.parametrize("key,value,fragment", [
    ("no_such_field", 1, "unknown parameter"),
    ("network_dim", "8", "whole number"),
    ("network_dim", 0, "at least 1"),
    ("learning_rate", True, "must be a number"),
    ("lr_scheduler", "cosine_fancy", "must be one of"),
    ("resolution", "512,abc", "whole numbers"),
    ("cache_latents", 1, "true or false"),
    ("format_version", 99, "unsupported"),
])
def test_bad_values_name_the_field(key, value, fragment):
    with pytest.raises(ConfigError) as exc:
        TrainConfig.from_dict({key: value})
    assert exc.value.errors[0].field == key
    assert fragment in exc.value.errors[0].message


def test_all_bad_fields_are_reported_at_once():
    with pytest.raises(ConfigError) as exc:
        TrainConfig.from_dict({"network_dim": -1, "seed": "x", "bogus": 1})
    assert {e.field for e in exc.value.errors} == {"network_dim", "seed", "bogus"}


def test_resolution_parsing():
    assert parse_resolution("512") == (512, 512)
    assert parse_resolution("512,768") == (512, 768)
    with pytest.raises(ValueError):
        parse_resolution("a,b")


def test_effective_learning_rates():
    cfg = TrainConfig(learning_rate=1e-4)
    assert cfg.effective_unet_lr() == 1e-4 and cfg.effective_text_encoder_lr() == 1e-4
    cfg = TrainConfig(learning_rate=1e-4, text_encoder_lr=0.0)
    assert cfg.effective_text_encoder_lr() == 0.0
    assert TrainConfig(network_train_unet_only=True).effective_text_encoder_lr() == 0.0


def test_kohya_gui_config_is_mapped_and_unmapped_listed():
    kohya = {
        "LoRA_type": "Kohya LoCon", "epoch": 5, "max_train_steps": "0", "optimizer": "AdamW8bit",
        "max_resolution": "768,768", "lr_warmup": 10, "network_dim": 32, "network_alpha": "16",
        "xformers": "sdpa", "max_token_length": "150", "clip_skip": "2", "text_encoder_lr": 0,
        "caption_extension": ".txt", "wandb_api_key": "secret", "LyCORIS_preset": "full", "sdxl": False,
    }
    cfg, unmapped = import_kohya_config(kohya)
    assert cfg.lora_type == "LoCon" and cfg.max_train_epochs == 5 and cfg.max_train_steps == 0
    assert cfg.optimizer_type == "AdamW8bit" and cfg.resolution == "768,768"
    assert cfg.lr_warmup_steps == pytest.approx(0.1)
    assert cfg.network_alpha == 16.0 and cfg.max_token_length == 150 and cfg.clip_skip == 2
    assert cfg.sdpa and not cfg.xformers
    assert cfg.effective_text_encoder_lr() == 0.0
    assert any(u.startswith("wandb_api_key") for u in unmapped)
    assert any(u.startswith("LyCORIS_preset") for u in unmapped)
    assert not any(u.startswith("sdxl") for u in unmapped)  # the family comes from the weights
    assert not any(u.startswith("sdxl") for u in import_kohya_config({"sdxl": True})[1])


def test_kohya_unsupported_values_are_listed():
    cfg, unmapped = import_kohya_config({"LoRA_type": "LyCORIS/LoHa", "optimizer": "AdamWScheduleFree", "epoch": 2})
    assert any("LoRA_type" in u for u in unmapped)
    assert any(u.startswith("optimizer") for u in unmapped)
    assert cfg.max_train_epochs == 2


def test_load_any_config_detects_format():
    assert load_any_config({"format_version": 1, "network_dim": 4})[0].network_dim == 4
    assert load_any_config({"LoRA_type": "Standard", "network_dim": 4})[0].network_dim == 4
