"""The one parameter base (trainer.params): declarations, JSON reading, format versions, generated flags
and form specs, and the tool options declared on it (no torch, no models)."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Optional

import pytest

from trainer.config import SAVE_PRECISIONS, TrainConfig
from trainer.params import (FieldError, ParamError, add_arguments, field_of, field_specs, param, read_values,
                            same_as)
from trainer.tools import options


def _even(value: int) -> None:
    if value % 2:
        raise ValueError("must be even")


@dataclass
class Small:
    rank: int = param(4, "a rank", min=1, max=64)
    scale: Optional[float] = param(None, "a scale", min=0.0)
    kind: str = param("a", "a choice", choices=("a", "b"))
    on: bool = param(False, "a switch")
    even: int = param(2, "an even number", check=_even)


def test_read_values_lists_every_bad_field():
    assert read_values(Small, {"rank": 8.0, "scale": "", "kind": "b"}, version=1) == {"rank": 8, "scale": None,
                                                                                      "kind": "b"}
    with pytest.raises(ParamError) as err:
        read_values(Small, {"rank": 0, "kind": "c", "on": 1, "even": 3, "nope": 1, "format_version": True}, version=1)
    assert [e.field for e in err.value.errors] == ["format_version", "rank", "kind", "on", "even", "nope"]
    assert {i.code for i in err.value.issues} == {"bad_value"} and err.value.issues[0].level == "error"
    assert "unknown parameter" in str(err.value) and "must be even" in str(err.value)
    with pytest.raises(ParamError):
        read_values(Small, {"format_version": 3}, version=2)


def test_older_format_versions_are_migrated():
    migrations = {1: lambda d: {("rank" if k == "dim" else k): v for k, v in d.items()}}
    assert read_values(Small, {"format_version": 1, "dim": 8}, version=2, migrations=migrations) == {"rank": 8}


def test_same_as_reuses_the_definition_and_may_only_change_the_default():
    @dataclass
    class Reuse:
        network_dim: int = same_as(TrainConfig, "network_dim", 4, tab="slider", min=2)

    f, source = field_of(Reuse, "network_dim"), field_of(TrainConfig, "network_dim")
    assert f.default == 4 and f.metadata["help"] == source.metadata["help"]
    assert (f.metadata["min"], f.metadata["max"]) == (2, source.metadata["max"])
    for bad in ({"help": "other"}, {"choices": (1, 2)}, {"min": 0}, {"max": 4096}):
        with pytest.raises(TypeError):
            same_as(TrainConfig, "network_dim", 4, **bad)


def test_flags_are_generated_with_types_choices_and_ranges(capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser, Small)
    args = parser.parse_args(["--rank", "8", "--on"])
    assert (args.rank, args.scale, args.kind, args.on) == (8, None, "a", True)
    for argv in (["--rank", "0"], ["--rank", "x"], ["--kind", "c"], ["--scale", "-1"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
    assert "must be at least 1" in capsys.readouterr().err
    given = argparse.ArgumentParser()
    add_arguments(given, Small, given_only=True)
    assert vars(given.parse_args(["--no-on"])) == {"rank": None, "scale": None, "kind": None, "on": False,
                                                   "even": None}
    assert "(default: 4)" in given.format_help()


def test_form_specs_come_from_the_declarations():
    spec = field_specs(Small)["scale"]
    assert (spec.kind, spec.optional, spec.minimum, spec.default) == (float, True, 0.0, None)
    assert field_specs(options.OutputOptions)["save_precision"].default == "fp16"  # the form's start value
    assert field_of(options.OutputOptions, "save_precision").default == "float"  # the CLI's (sd-scripts')


def test_tool_flags_are_the_option_declarations():
    from trainer.tools.__main__ import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for tool, groups in options.TOOL_OPTIONS.items():
        flags = {a.dest for a in sub.choices[tool]._actions} - {"help", "debug"}
        assert flags == {f.name for g in groups for f in dataclasses.fields(g)}, tool
    resize = sub.choices["resize"]
    assert {a.dest: a.choices for a in resize._actions}["dynamic_method"] == list(options.DYNAMIC_METHODS)
    assert {a.dest: a.choices for a in resize._actions}["save_precision"] == list(SAVE_PRECISIONS)


def test_the_dynamic_parameter_rule():
    assert options.dynamic_param_problem("sv_ratio", 2.0) is None
    assert options.dynamic_param_problem("sv_ratio", 0.5)[0] == "sv_ratio_param"
    assert options.dynamic_param_problem("sv_fro", 1.5)[0] == "fraction_param"
    assert options.dynamic_param_problem("sv_cumulative", 0.0)[0] == "fraction_param"
    assert options.dynamic_param_problem("sv_fro", 1.0) is None


def test_field_error_text():
    assert str(FieldError("rank", "must be at least 1")) == "rank: must be at least 1"
    assert str(FieldError("", "not JSON")) == "not JSON"


# ---- the slider spec on the base ---------------------------------------------------------------------------
SPEC_FILE_V1 = {  # what the slider wizard wrote before the spec moved onto trainer.params
    "format_version": 1, "pairs": [{"low": "lo", "high": "hi", "name": "front"}], "method": "copy", "model": "m",
    "prompt": "p", "caption_extension": ".txt", "output_dir": "/o", "output_name": "slider", "work_dir": "",
    "reuse_intermediates": False, "network_dim": 4, "network_alpha": 1.0, "optimizer_type": "CAME",
    "learning_rate": 5e-05, "max_train_steps": 400, "lr_warmup_steps": 20, "lr_scheduler": "constant_with_warmup",
    "network_train_unet_only": True, "resolution": "512", "seed": 42, "train_args": {"mixed_precision": "no"},
    "slider_scale": 1.0, "pair_matching": "auto", "ratio": 1.5, "new_rank": 8, "clamp_quantile": 0.99,
    "resize": None, "resize_rank": 4, "resize_method": None, "resize_param": None, "save_precision": "fp16",
    "preview": True, "preview_prompts": ["a --n b"], "preview_seeds": [1, 2],
    "preview_weights": [-1.0, -0.5, 0.0, 0.5, 1.0], "preview_width": 0, "preview_height": 0, "preview_steps": 28,
    "preview_cfg_scale": 7.0, "preview_sampler": "euler"}


def test_a_spec_file_of_the_previous_version_loads_unchanged():
    from trainer.slider import SliderSpec

    spec = SliderSpec.from_dict(SPEC_FILE_V1)
    assert spec.to_dict() == SPEC_FILE_V1
    assert spec.training_values()["pretrained_model_name_or_path"] == "m"


def test_the_slider_reuses_the_training_and_tool_definitions():
    from trainer.params import shared_fields
    from trainer.slider.spec import TRAINED, SliderSpec

    shared = shared_fields(SliderSpec)
    assert len([s for s in shared.values() if s[0] is TrainConfig]) >= 14
    for name, (source, source_name) in shared.items():
        mine, theirs = field_of(SliderSpec, name), field_of(source, source_name)
        assert mine.type == theirs.type, name
        for key in ("help", "choices", "check", "convert", "widget"):
            assert mine.metadata[key] == theirs.metadata[key], (name, key)
    # every shared training value reaches the stage's TrainConfig under its own name
    values = SliderSpec(network_dim=16, model="base").training_values()
    assert all(values[train] == getattr(SliderSpec(network_dim=16, model="base"), name)
               for name, train in TRAINED.items())


def test_the_slider_flags_are_the_spec_fields():
    from trainer.slider.__main__ import CUSTOM_FLAGS, build_parser
    from trainer.slider.spec import SliderSpec

    flags = {a.dest for a in build_parser()._actions}
    own = {"help", "spec", "dry_run", "quiet", "debug", "pair", "pair_name", "train_arg", "resize", "preview_prompt"}
    assert flags - own \
        == set(SliderSpec.field_names()) - set(CUSTOM_FLAGS)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--network_dim", "0"])  # TrainConfig's range


def test_the_slider_form_shows_the_spec_sections():
    from lora_gui import slider_form

    assert slider_form.BASIC == ("method", "model", "prompt", "output_dir", "output_name")
    assert slider_form.MERGE == ("ratio", "new_rank", "resize", "resize_method", "resize_param", "resize_rank",
                                 "save_precision")
    assert slider_form.NUMBER_LISTS == ("preview_weights", "preview_seeds")
