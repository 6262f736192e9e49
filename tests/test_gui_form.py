"""The form is generated from TrainConfig: every field exactly once, values round-trip."""

from __future__ import annotations

import dataclasses

import gradio as gr
import pytest

from lora_gui import form, rules
from lora_gui.form import FIELDS, build_config, config_to_values, values_to_dict
from lora_gui.page import Page
from lora_gui.tabs import advanced, folders, parameters, samples, source_model
from trainer.config import TABS, TrainConfig


def test_fields_come_from_the_dataclass():
    assert [s.name for s in FIELDS] == TrainConfig.field_names()
    assert {s.tab for s in FIELDS} <= set(TABS)


def test_every_field_is_placed_exactly_once():
    page = Page(lang="en", values={})
    builders = {"source_model": source_model.build, "folders": folders.build, "parameters": parameters.build,
                "advanced": advanced.build, "samples": samples.build}
    with gr.Blocks():
        for tab in TABS:
            with gr.Tab(tab):
                builders[tab](page)  # Page.field_component raises if a field is placed twice
    assert sorted(page.fields) == sorted(TrainConfig.field_names())
    assert len(page.ordered_fields()) == len(TrainConfig.field_names())
    # each component shows its field's label and help from the metadata
    for spec in FIELDS:
        comp = page.fields[spec.name]
        meta = next(f.metadata for f in dataclasses.fields(TrainConfig) if f.name == spec.name)
        assert comp.label == (meta["label"] or spec.name)
        assert comp.info.startswith(meta["help"])


def test_component_kinds_follow_the_types():
    with gr.Blocks():
        comps = {s.name: form.make_component(s, s.default, "en") for s in FIELDS}
    assert isinstance(comps["cache_latents"], gr.Checkbox)
    assert isinstance(comps["optimizer_type"], gr.Dropdown)
    assert list(comps["optimizer_type"].choices[0])[1] == "AdamW"
    assert isinstance(comps["network_dim"], gr.Number)
    assert isinstance(comps["unet_lr"], gr.Textbox)  # optional number: blank means "use the learning rate"
    assert comps["sample_prompts"].lines > 1


def test_values_round_trip_through_the_form():
    cfg = TrainConfig(network_dim=16, learning_rate=5e-5, unet_lr=None, text_encoder_lr=2e-5, optimizer_type="Lion",
                      shuffle_caption=True, resolution="512,768", lr_warmup_steps=0.1)
    values = config_to_values(cfg)
    again, errors = build_config(values)
    assert errors == []
    assert again == cfg


def test_bad_values_are_reported_per_field():
    values = config_to_values(TrainConfig())
    index = {s.name: i for i, s in enumerate(FIELDS)}
    values[index["clip_skip"]] = 0  # below its minimum
    values[index["unet_lr"]] = "abc"
    values[index["network_dim"]] = None
    cfg, errors = build_config(values)
    assert cfg is None
    assert {e.field for e in errors} == {"clip_skip", "unet_lr", "network_dim"}


def test_numbers_from_the_browser_are_coerced():
    values = config_to_values(TrainConfig())
    index = {s.name: i for i, s in enumerate(FIELDS)}
    values[index["network_dim"]] = 32.0
    values[index["unet_lr"]] = " 1e-4 "
    data = values_to_dict(values)
    assert data["network_dim"] == 32 and isinstance(data["network_dim"], int)
    assert data["unet_lr"] == pytest.approx(1e-4)


def test_dependent_field_rules_name_real_fields():
    names = set(TrainConfig.field_names())
    assert set(rules.ENABLED_WHEN) <= names
    assert set(rules.VALUE_WHEN_DISABLED) <= set(rules.ENABLED_WHEN)
    values = dataclasses.asdict(TrainConfig(lora_type="Standard", lr_scheduler="constant", lr_warmup_steps=5))
    states = rules.field_states(values)
    assert states["conv_dim"] == (False, None)
    assert states["lr_warmup_steps"] == (False, 0)  # disabled and reset, as kohya_ss does
    values.update(lora_type="LoCon", lr_scheduler="cosine", noise_offset_type="Multires")
    states = rules.field_states(values)
    assert states["conv_dim"][0] and states["lr_warmup_steps"][0] and states["multires_noise_iterations"][0]
    assert states["noise_offset"][0] is False
