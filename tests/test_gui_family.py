"""The model family in the form: quick picks, SDXL-only fields, and the defaults that follow the family."""

from __future__ import annotations

import dataclasses

import gradio as gr

from lora_gui import family, rules
from lora_gui.family import (FAMILY_DEFAULT_FIELDS, FAMILY_FIELDS, QUICK_PICKS, defaults_for_family, effective, field_shown,
                             model_family, quick_pick_for)
from lora_gui.form import FIELDS, build_config, config_to_values
from lora_gui.tabs import source_model
from trainer.config import TrainConfig

SDXL_ID = "stabilityai/stable-diffusion-xl-base-1.0"


def test_quick_pick_has_sdxl_and_every_pick_names_a_family():
    assert QUICK_PICKS["sdxl"] == (SDXL_ID, "sdxl", False, False)
    for key, pick in QUICK_PICKS.items():
        if pick is not None:
            assert pick[1] in ("sd1", "sd2", "sdxl"), key
            assert quick_pick_for(pick[0]) == key
    assert quick_pick_for("/my/own/model.safetensors") == "custom"


def test_family_of_quick_pick_ids_is_known_without_the_files():
    # the ids are not in any cache here: the table alone decides
    assert model_family(SDXL_ID) == "sdxl"
    assert model_family("stable-diffusion-v1-5/stable-diffusion-v1-5") == "sd1"
    assert model_family("") == ""
    assert model_family("/no/such/model") == ""


def test_family_of_a_model_folder_is_detected(tmp_path, monkeypatch):
    from lora_gui import engine

    monkeypatch.setattr(engine, "detect_model", lambda path: engine.ModelDetection(ok=True, family="sdxl", kind="diffusers"))
    assert model_family(str(tmp_path)) == "sdxl"
    monkeypatch.setattr(engine, "detect_model", lambda path: engine.ModelDetection(ok=False, message="broken"))
    assert model_family(str(tmp_path)) == ""


def test_sdxl_only_fields_are_real_fields_shown_only_for_sdxl():
    names = set(TrainConfig.field_names())
    assert set(FAMILY_FIELDS) <= names
    assert set(FAMILY_DEFAULT_FIELDS) <= names
    for name in FAMILY_FIELDS:
        assert field_shown(name, "sdxl")
        assert not field_shown(name, "sd1") and not field_shown(name, "sd2") and not field_shown(name, "")
    assert field_shown("network_dim", "sd1") and field_shown("network_dim", "sdxl")


def test_hidden_sdxl_fields_count_with_their_defaults():
    """An SDXL setting left over from an SDXL model cannot cause errors for an SD 1.x model."""
    values = config_to_values(TrainConfig(pretrained_model_name_or_path="stable-diffusion-v1-5/stable-diffusion-v1-5",
                                          cache_text_encoder_outputs=True, no_half_vae=False,
                                          network_train_text_encoder_2=False))
    cfg, errors = build_config(values)
    assert errors == []
    defaults = TrainConfig()
    for name in FAMILY_FIELDS:
        assert getattr(cfg, name) == getattr(defaults, name), name
    # the same values with the SDXL model keep what the user set
    values[[s.name for s in FIELDS].index("pretrained_model_name_or_path")] = SDXL_ID
    cfg, _ = build_config(values)
    assert cfg.cache_text_encoder_outputs and not cfg.no_half_vae and not cfg.network_train_text_encoder_2
    data = dataclasses.asdict(TrainConfig(pretrained_model_name_or_path=SDXL_ID, no_half_vae=False))
    assert effective(data) is data  # nothing hidden: unchanged


def test_choosing_sdxl_switches_untouched_sd_defaults():
    changes, auto, notes = defaults_for_family("sd1", "sdxl", {"resolution": "512", "bucket_reso_steps": 64.0}, {})
    assert changes == {"resolution": "1024", "bucket_reso_steps": 32}
    assert auto == changes
    assert [(n["field"], n["old"], n["new"], n["kept"]) for n in notes] == [
        ("resolution", "512", "1024", False), ("bucket_reso_steps", 64.0, 32, False)]


def test_choosing_sdxl_keeps_values_the_user_changed_and_says_so():
    changes, auto, notes = defaults_for_family("sd1", "sdxl", {"resolution": "768", "bucket_reso_steps": 64}, {})
    assert changes == {"bucket_reso_steps": 32}
    assert [(n["field"], n["kept"]) for n in notes] == [("resolution", True), ("bucket_reso_steps", False)]
    html = source_model.family_note(notes, "sdxl", "en")
    assert "64 → 32" in html and "keeps your value 768" in html and "1024" in html
    assert "SDXL" not in source_model.family_note([], "sdxl", "en")  # nothing to say: no note


def test_unknown_family_changes_nothing_and_the_same_family_twice_changes_nothing():
    values = {"resolution": "512", "bucket_reso_steps": 64}
    assert defaults_for_family("sd1", "", values, {})[0] == {}
    assert defaults_for_family("sdxl", "sdxl", values, {})[0] == {}
    assert defaults_for_family("sd1", "sd2", values, {})[0] == {}


def test_leaving_sdxl_restores_only_what_was_switched_and_is_unchanged():
    auto = {"resolution": "1024", "bucket_reso_steps": 32}
    changes, auto_after, _ = defaults_for_family("sdxl", "sd1", {"resolution": "1024", "bucket_reso_steps": 32}, auto)
    assert changes == {"resolution": "512", "bucket_reso_steps": 64} and auto_after == {}
    # the user has set the resolution since: it stays
    changes, _, _ = defaults_for_family("sdxl", "sd1", {"resolution": "896", "bucket_reso_steps": 32}, auto)
    assert changes == {"bucket_reso_steps": 64}
    # SDXL values the page did not set (e.g. from a preset) stay
    assert defaults_for_family("sdxl", "sd1", {"resolution": "1024", "bucket_reso_steps": 32}, {})[0] == {}


def test_v2_switches_follow_the_model():
    skip = gr.skip()
    v2, v_param = source_model.flags_for_model(SDXL_ID, True, True)
    assert v2 is False and v_param is False
    v2, v_param = source_model.flags_for_model("stabilityai/stable-diffusion-2-1", False, False)
    assert v2 is True and v_param is True
    v2, v_param = source_model.flags_for_model("/no/such/model", True, False)
    assert v2 == skip and v_param == skip


def test_text_encoder_switches_need_a_trained_text_encoder():
    values = dataclasses.asdict(TrainConfig())
    assert rules.field_states(values)["network_train_text_encoder_1"] == (True, None)
    values.update(network_train_unet_only=True)
    assert rules.field_states(values)["network_train_text_encoder_2"][0] is False
    values.update(network_train_unet_only=False, text_encoder_lr="0")
    assert rules.field_states(values)["network_train_text_encoder_1"][0] is False
    values.update(text_encoder_lr="", learning_rate=1e-4)
    assert rules.field_states(values)["network_train_text_encoder_1"][0] is True
    # SD 2.x switch: off and disabled for SDXL
    assert rules.field_states(dict(values, v2=True, _family="sdxl"))["v2"] == (False, False)


def test_the_initial_family_hides_fields_when_the_page_is_built():
    from lora_gui.page import Page
    from lora_gui.tabs import advanced

    for fam, shown in (("sd1", False), ("sdxl", True)):
        page = Page(lang="en", values={}, family=fam)
        with gr.Blocks():
            advanced.build(page)
        assert all(page.cells[n].visible is shown for n in FAMILY_FIELDS if n in page.cells)
    assert family.hidden_fields("sdxl") == []
