"""Presets: shipped presets load, save/load round trip, relative paths, kohya_ss import."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lora_gui import APP_DIR, presets
from lora_gui.paths import relativize_path, resolve_path
from trainer.config import TrainConfig

SHIPPED = ("cpu_demo", "sd15_character", "sd15_style", "sd15_slider_pair", "sdxl_character")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_presets_load(name):
    loaded = presets.load_preset(name)
    assert loaded.unmapped == []
    assert loaded.keys  # every shipped preset sets something


def test_cpu_demo_points_into_the_app_folder():
    cfg = presets.load_preset("cpu_demo").config
    assert Path(cfg.pretrained_model_name_or_path) == APP_DIR / "trainer" / "toyworld" / "model"
    assert Path(cfg.train_data_dir) == APP_DIR / "demo" / "img"
    assert Path(cfg.output_dir) == APP_DIR / "demo" / "output"
    assert cfg.resolution == "64" and cfg.train_batch_size == 4 and cfg.mixed_precision == "no"
    assert cfg.sample_every_n_epochs == 2 and "--w 64 --h 64 --s 25" in cfg.sample_prompts


def test_slider_pair_preset_values():
    cfg = presets.load_preset("sd15_slider_pair").config
    assert (cfg.network_dim, cfg.network_alpha, cfg.network_train_unet_only) == (4, 1.0, True)
    assert (cfg.learning_rate, cfg.lr_warmup_steps, cfg.optimizer_type, cfg.max_train_steps) == (5e-5, 20, "CAME", 400)


def test_sdxl_character_preset_suits_sdxl():
    loaded = presets.load_preset("sdxl_character")
    cfg = loaded.config
    assert (cfg.resolution, cfg.bucket_reso_steps) == ("1024", 32)
    assert cfg.max_bucket_reso >= 1024 and cfg.no_half_vae
    # text-encoder outputs are cached: the text encoder is frozen and the captions never change
    assert cfg.cache_text_encoder_outputs and cfg.network_train_unet_only
    assert not cfg.shuffle_caption and cfg.caption_dropout_rate == 0 and cfg.caption_dropout_every_n_epochs == 0
    assert "--w 1024 --h 1024" in cfg.sample_prompts
    assert "pretrained_model_name_or_path" not in loaded.keys and "train_data_dir" not in loaded.keys
    from trainer import validation

    if hasattr(validation, "family_issues"):
        assert validation.family_issues(cfg, "sdxl", cuda=True) == []
    from lora_gui.family import QUICK_PICKS

    sdxl = cfg.replace(pretrained_model_name_or_path=QUICK_PICKS["sdxl"][0])
    codes = {i.code for i in validation.validate(sdxl) if i.level == "error"}
    # only the missing model and folders: no setting of the preset itself is refused
    assert codes <= {"model_path_empty", "model_path_invalid", "dir_empty", "output_dir_empty"}, codes


def test_loading_an_sdxl_preset_for_another_model_says_so():
    from lora_gui.tabs.config_bar import _loaded_message

    loaded = presets.load_preset("sdxl_character")
    assert "SDXL" in _loaded_message(loaded, "sdxl_character", "en", "stable-diffusion-v1-5/stable-diffusion-v1-5")
    assert "SDXL" not in _loaded_message(loaded, "sdxl_character", "en", "stabilityai/stable-diffusion-xl-base-1.0")
    assert "SDXL" not in _loaded_message(presets.load_preset("sd15_character"), "sd15_character", "en", "")


def test_presets_saved_from_an_sd1_form_are_not_called_sdxl(tmp_path):
    from lora_gui.form import build_config, config_to_values
    from lora_gui.tabs.config_bar import _loaded_message

    # what "Save as preset" writes for an SD 1.x form: every field, the SDXL-only ones included
    cfg, errors = build_config(config_to_values(TrainConfig(
        pretrained_model_name_or_path="stable-diffusion-v1-5/stable-diffusion-v1-5", network_dim=16)))
    assert not errors
    path = tmp_path / "sd1.json"
    path.write_text(presets.preset_json(cfg), encoding="utf-8")
    loaded = presets.read_preset_file(path)
    assert not presets.made_for_sdxl(loaded)
    assert "SDXL" not in _loaded_message(loaded, "sd1", "en", "")
    # the same settings without a model, loaded over an SD 1.x model
    data = json.loads(presets.preset_json(cfg))
    del data["pretrained_model_name_or_path"]
    assert not presets.made_for_sdxl(presets.parse_preset(data))
    # an SDXL-only option away from its default does make it an SDXL preset
    data["cache_text_encoder_outputs"] = True
    assert presets.made_for_sdxl(presets.parse_preset(data))


@pytest.mark.parametrize("sdxl", [False, True])
def test_kohya_sdxl_checkbox_decides_the_family(tmp_path, sdxl):
    from lora_gui.tabs.config_bar import _loaded_message

    kohya = {"LoRA_type": "Standard", "sdxl": sdxl, "sdxl_no_half_vae": True, "sdxl_cache_text_encoder_outputs": False,
             "max_resolution": "512,512", "pretrained_model_name_or_path": "runwayml/stable-diffusion-v1-5"}
    (tmp_path / "kohya.json").write_text(json.dumps(kohya), encoding="utf-8")
    loaded = presets.read_preset_file(tmp_path / "kohya.json")
    assert presets.made_for_sdxl(loaded) is sdxl
    assert ("made for SDXL" in _loaded_message(loaded, "kohya.json", "en", "")) is sdxl


def test_parameter_presets_leave_folders_alone():
    loaded = presets.load_preset("sd15_character")
    assert "train_data_dir" not in loaded.keys and "output_dir" not in loaded.keys
    assert "network_dim" in loaded.keys


def _folders(tmp_path: Path) -> presets.PresetFolders:
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "cpu_demo.json").write_text('{"format_version": 1, "network_dim": 4}', encoding="utf-8")
    return presets.PresetFolders(shipped, tmp_path / "user")


def test_save_and_load_round_trip(tmp_path):
    folders = _folders(tmp_path)
    cfg = TrainConfig(pretrained_model_name_or_path=str(APP_DIR / "demo" / "tiny-sd1"), train_data_dir="/data/img",
                      output_dir=str(tmp_path / "out"), network_dim=16, unet_lr=2e-4, optimizer_type="Lion",
                      sample_prompts="a cat\na dog --w 512")
    path = presets.save_preset("my preset", cfg, folders)
    assert path.parent == folders.user  # never among the shipped ones
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["format_version"] == 1
    assert data["pretrained_model_name_or_path"] == "./demo/tiny-sd1"  # inside the app folder: relative
    assert data["train_data_dir"] == "/data/img"
    assert presets.list_presets(folders) == ["cpu_demo", "my preset"]
    assert presets.load_preset("my preset", folders).config == cfg


def test_shipped_presets_are_read_only_and_overwriting_needs_a_yes(tmp_path):
    folders = _folders(tmp_path)
    shipped_text = (folders.shipped / "cpu_demo.json").read_text(encoding="utf-8")
    with pytest.raises(presets.PresetError) as exc:
        presets.save_preset("cpu_demo", TrainConfig(network_dim=64), folders, overwrite=True)
    assert exc.value.key == "preset.shipped_read_only"
    assert (folders.shipped / "cpu_demo.json").read_text(encoding="utf-8") == shipped_text
    assert not (folders.user / "cpu_demo.json").exists()
    presets.save_preset("mine", TrainConfig(network_dim=8), folders)
    with pytest.raises(presets.PresetError) as exc:
        presets.save_preset("mine", TrainConfig(network_dim=16), folders)
    assert exc.value.key == "preset.exists"
    assert presets.load_preset("mine", folders).config.network_dim == 8  # untouched until confirmed
    presets.save_preset("mine", TrainConfig(network_dim=16), folders, overwrite=True)
    assert presets.load_preset("mine", folders).config.network_dim == 16


@pytest.mark.parametrize("name", ["", "../evil", "a/b", ".hidden"])
def test_bad_preset_names_are_refused(tmp_path, name):
    with pytest.raises(presets.PresetError):
        presets.save_preset(name, TrainConfig(), _folders(tmp_path))


def test_broken_files_give_messages(tmp_path):
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(presets.PresetError) as exc:
        presets.read_preset_file(tmp_path / "bad.json")
    assert exc.value.key == "preset.not_json"
    (tmp_path / "wrong.json").write_text('{"network_dim": "big"}', encoding="utf-8")
    with pytest.raises(presets.PresetError) as exc:
        presets.read_preset_file(tmp_path / "wrong.json")
    assert exc.value.key == "preset.bad_fields" and "network_dim" in exc.value.params["fields"]


def test_kohya_config_import_lists_unmapped(tmp_path):
    kohya = {"LoRA_type": "Standard", "optimizer": "AdamW8bit", "max_resolution": "768,768", "epoch": 4,
             "network_dim": 32, "network_alpha": 16, "learning_rate": 0.0002, "xformers": "xformers",
             "some_unknown_option": True, "pretrained_model_name_or_path": "runwayml/stable-diffusion-v1-5"}
    (tmp_path / "kohya.json").write_text(json.dumps(kohya), encoding="utf-8")
    loaded = presets.read_preset_file(tmp_path / "kohya.json")
    assert loaded.kohya
    assert loaded.config.resolution == "768,768" and loaded.config.max_train_epochs == 4
    assert loaded.config.optimizer_type == "AdamW8bit" and loaded.config.network_dim == 32
    assert any("some_unknown_option" in u for u in loaded.unmapped)


def test_path_resolution():
    assert resolve_path("./demo/img") == str(APP_DIR / "demo" / "img")
    assert resolve_path("") == ""
    assert resolve_path("runwayml/stable-diffusion-v1-5", allow_hub_id=True) == "runwayml/stable-diffusion-v1-5"
    assert relativize_path(str(APP_DIR / "demo" / "img")) == "./demo/img"
    assert relativize_path("/elsewhere/x") == "/elsewhere/x"
