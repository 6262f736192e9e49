"""trainer.validation: every rule fires, with its code, level and field."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from trainer.config import TrainConfig
from trainer.tiny import make_image_folder
from trainer.validation import CODES, check_model_path, has_errors, validate


@pytest.fixture
def good(tmp_path) -> TrainConfig:
    """A config with no issue at all: fake SD1 diffusers folder, one captioned subset, CPU settings."""
    model = tmp_path / "model"
    (model / "text_encoder").mkdir(parents=True)
    (model / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    (model / "text_encoder" / "config.json").write_text(json.dumps({"hidden_act": "quick_gelu"}))
    make_image_folder(tmp_path / "img" / "10_sks disc", 2, caption="sks disc")
    return TrainConfig(pretrained_model_name_or_path=str(model), train_data_dir=str(tmp_path / "img"),
                       output_dir=str(tmp_path / "out"), output_name="disc", resolution="64",
                       min_bucket_reso=64, max_bucket_reso=128, bucket_reso_steps=64, mixed_precision="no")


def found(cfg: TrainConfig, code: str, *, cuda: bool = False):
    """The issues with `code`; fails with the full list when there is none."""
    issues = validate(cfg, cuda_available=cuda)
    hits = [i for i in issues if i.code == code]
    assert hits, f"{code} not raised; got {[(i.code, i.field) for i in issues]}"
    return hits


def one(cfg: TrainConfig, code: str, field: str, level: str, *, cuda: bool = False):
    (hit,) = found(cfg, code, cuda=cuda)
    assert (hit.field, hit.level) == (field, level)
    assert hit.message.rstrip().endswith(".")  # full sentences: what is wrong, then what to do
    return hit


def test_clean_config_has_no_issues(good):
    assert validate(good, cuda_available=False) == []
    assert good.validate() == []  # TrainConfig.validate delegates here (CUDA detected torch-free)
    assert has_errors(validate(good.replace(output_dir=""), cuda_available=False))


# ---- model and other paths ----------------------------------------------------------------------

def test_model_path_empty(good):
    one(good.replace(pretrained_model_name_or_path=""), "model_path_empty", "pretrained_model_name_or_path", "error")


def test_model_path_missing(good, tmp_path):
    hit = one(good.replace(pretrained_model_name_or_path=str(tmp_path / "nope")), "model_path_invalid",
              "pretrained_model_name_or_path", "error")
    assert "nope" in hit.message


def test_model_folder_without_model_index(good, tmp_path):
    (tmp_path / "empty_model").mkdir()
    hit = one(good.replace(pretrained_model_name_or_path=str(tmp_path / "empty_model")), "model_path_invalid",
              "pretrained_model_name_or_path", "error")
    assert "model_index.json" in hit.message


def test_model_check_names_what_is_wrong(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m.txt").write_text("x")
    assert "model_index.json" in check_model_path(str(tmp_path / "m"))
    assert "not a model file" in check_model_path(str(tmp_path / "m.txt"))
    assert "not found" in check_model_path(str(tmp_path / "none"))


@pytest.mark.parametrize("field", ["vae", "network_weights", "resume"])
def test_optional_path_missing(good, tmp_path, field):
    one(good.replace(**{field: str(tmp_path / "missing")}), f"{field}_missing", field, "error")


def test_resume_must_be_a_folder(good, tmp_path):
    (tmp_path / "state.bin").write_bytes(b"x")
    one(good.replace(resume=str(tmp_path / "state.bin")), "resume_not_folder", "resume", "error")


# ---- image folders -------------------------------------------------------------------------------

def test_train_dir_empty(good):
    one(good.replace(train_data_dir=""), "dir_empty", "train_data_dir", "error")


def test_train_dir_missing(good, tmp_path):
    one(good.replace(train_data_dir=str(tmp_path / "nowhere")), "dir_missing", "train_data_dir", "error")


def test_train_dir_is_a_file(good, tmp_path):
    (tmp_path / "file.txt").write_text("x")
    one(good.replace(train_data_dir=str(tmp_path / "file.txt")), "dir_not_folder", "train_data_dir", "error")


def test_train_dir_holding_images_says_pick_the_parent_after_renaming(good, tmp_path):
    make_image_folder(tmp_path / "pics" / "sks woman", 2)
    hit = one(good.replace(train_data_dir=str(tmp_path / "pics" / "sks woman")), "dir_holds_images",
              "train_data_dir", "error")
    assert str((tmp_path / "pics").resolve()) in hit.message and "10_sks woman" in hit.message
    assert "PARENT" in hit.message and hit.params["count"] == 2


def test_train_dir_that_is_a_subset_folder_says_pick_the_parent(good, tmp_path):
    leaf = Path(good.train_data_dir) / "10_sks disc"
    hit = one(good.replace(train_data_dir=str(leaf)), "dir_holds_images", "train_data_dir", "error")
    assert str(Path(good.train_data_dir).resolve()) in hit.message and "renaming" not in hit.message


def test_train_dir_without_repeats_folders_lists_what_it_found(good, tmp_path):
    make_image_folder(tmp_path / "raw" / "woman", 1)
    make_image_folder(tmp_path / "raw" / "man", 1)
    hit = one(good.replace(train_data_dir=str(tmp_path / "raw")), "dir_no_subsets", "train_data_dir", "error")
    assert hit.params["folders"] == ["man", "woman"] and "man, woman" in hit.message


def test_folder_without_repeats_beside_a_subset_is_ignored_with_a_warning(good):
    make_image_folder(Path(good.train_data_dir) / "extra", 1)
    hit = one(good, "folder_ignored", "train_data_dir", "warning")
    assert hit.params["folder"] == "extra" and "10_extra" in hit.message


def test_images_beside_subsets_are_reported_unused(good):
    Image.new("RGB", (8, 8)).save(Path(good.train_data_dir) / "stray.png")
    one(good, "loose_images_ignored", "train_data_dir", "warning")


def test_subset_without_images(good):
    (Path(good.train_data_dir) / "5_empty").mkdir()
    one(good, "subset_empty", "train_data_dir", "warning")


def test_no_images_in_any_subset(good, tmp_path):
    (tmp_path / "bare" / "10_sks").mkdir(parents=True)
    one(good.replace(train_data_dir=str(tmp_path / "bare")), "dir_no_images", "train_data_dir", "error")


def test_images_in_nested_folders_are_reported(good):
    make_image_folder(Path(good.train_data_dir) / "10_sks disc" / "more", 1)
    one(good, "nested_images_ignored", "train_data_dir", "warning")


def test_folder_without_class_text_and_no_captions_trains_empty_captions(good, tmp_path):
    make_image_folder(tmp_path / "img2" / "10_", 2)
    one(good.replace(train_data_dir=str(tmp_path / "img2")), "empty_caption", "train_data_dir", "warning")


def test_caption_extension_matching_nothing_while_txt_exists(good):
    hit = one(good.replace(caption_extension=".caption"), "caption_extension_mismatch", "caption_extension",
              "warning")
    assert hit.params == {"extension": ".caption", "found_extension": ".txt", "count": 2}
    assert "2 image(s)" in hit.message and ".txt" in hit.message


def test_caption_extension_without_dot(good):
    one(good.replace(caption_extension="txt"), "caption_extension_no_dot", "caption_extension", "warning")


def test_corrupt_image_is_named(good):
    bad = Path(good.train_data_dir) / "10_sks disc" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 garbage")
    hit = one(good, "corrupt_image", "train_data_dir", "error")
    assert str(bad) in hit.message and hit.params["path"] == str(bad)


def test_unreadable_caption_file_is_named(good):
    cap = Path(good.train_data_dir) / "10_sks disc" / "img_000.txt"
    cap.write_bytes(b"\xff\xfe\x00bad utf8 \xc3\x28")
    hit = one(good, "caption_unreadable", "train_data_dir", "error")
    assert str(cap) in hit.message and "UTF-8" in hit.message


def test_two_images_with_the_same_stem(good):
    Image.new("RGB", (8, 8)).save(Path(good.train_data_dir) / "10_sks disc" / "img_000.jpg")
    one(good, "duplicate_image_stem", "train_data_dir", "warning")


def test_reg_dir_missing(good, tmp_path):
    one(good.replace(reg_data_dir=str(tmp_path / "noreg")), "dir_missing", "reg_data_dir", "error")


def test_reg_dir_holding_images_says_pick_the_parent(good, tmp_path):
    make_image_folder(tmp_path / "reg" / "woman", 1)
    hit = one(good.replace(reg_data_dir=str(tmp_path / "reg" / "woman")), "dir_holds_images", "reg_data_dir",
              "error")
    assert "1_woman" in hit.message


def test_reg_images_beyond_the_train_count_are_unused(good, tmp_path):
    make_image_folder(tmp_path / "reg" / "1_disc", 25)  # 2 images x 10 repeats = 20 train samples
    hit = one(good.replace(reg_data_dir=str(tmp_path / "reg")), "reg_images_unused", "reg_data_dir", "warning")
    assert hit.params == {"used": 20, "found": 25, "train_samples": 20}


# ---- output --------------------------------------------------------------------------------------

def test_output_dir_empty(good):
    one(good.replace(output_dir=""), "output_dir_empty", "output_dir", "error")


def test_output_dir_is_a_file(good, tmp_path):
    (tmp_path / "out.txt").write_text("x")
    one(good.replace(output_dir=str(tmp_path / "out.txt")), "output_dir_not_folder", "output_dir", "error")


def test_logging_dir_under_a_file(good, tmp_path):
    (tmp_path / "logs.txt").write_text("x")
    one(good.replace(logging_dir=str(tmp_path / "logs.txt" / "runs")), "logging_dir_not_folder", "logging_dir",
        "error")
    assert not [i for i in validate(good.replace(logging_dir=str(tmp_path / "new" / "logs")))
                if i.field == "logging_dir"]  # a folder that does not exist yet is made


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write anywhere")
def test_output_dir_not_writable(good, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    one(good.replace(output_dir=str(locked / "out")), "output_dir_not_writable", "output_dir", "error")


@pytest.mark.parametrize("name", ["", "a/b", "bad:name"])
def test_output_name_invalid(good, name):
    one(good.replace(output_name=name), "output_name_invalid", "output_name", "error")


@pytest.mark.parametrize("save_as,existing", [("safetensors", "disc.safetensors"), ("ckpt", "disc.ckpt"),
                                              ("safetensors", "disc-000002.safetensors")])
def test_output_file_already_exists(good, save_as, existing):
    out = Path(good.output_dir)
    out.mkdir()
    (out / existing).write_bytes(b"x")
    (out / "disc.pt").write_bytes(b"x")  # another format does not clash
    hit = one(good.replace(save_model_as=save_as), "output_exists", "output_name", "error")
    assert hit.params["files"] == [existing] and hit.params["suggestion"] == "disc_2"
    assert "Change the output name" in hit.message


def test_resuming_continues_the_files_of_its_run_but_not_over_its_final_file(good):
    out = Path(good.output_dir)
    (out / "disc-stopped-state").mkdir(parents=True)
    for name in ("disc-stopped.safetensors", "disc-000002.safetensors"):
        (out / name).write_bytes(b"x")
    resumed = good.replace(resume=str(out / "disc-stopped-state"))
    assert [i.code for i in validate(resumed) if i.field == "output_name"] == []
    assert [i.code for i in validate(good) if i.field == "output_name"] == ["output_exists"]
    (out / "disc.safetensors").write_bytes(b"x")  # the run's end is already there: its final save would clash
    one(resumed, "output_exists", "output_name", "error")


def test_fp8_base_without_gradient_checkpointing_is_warned(good):
    one(good.replace(fp8_base=True), "fp8_base_without_checkpointing", "fp8_base", "warning")
    assert validate(good.replace(fp8_base=True, gradient_checkpointing=True)) == []


# ---- network, optimizer, scheduler -----------------------------------------------------------------

def test_alpha_above_rank(good):
    one(good.replace(network_dim=4, network_alpha=8), "alpha_above_rank", "network_alpha", "warning")


def test_conv_alpha_above_conv_dim_with_locon(good):
    one(good.replace(lora_type="LoCon", conv_dim=2, conv_alpha=4), "conv_alpha_above_rank", "conv_alpha", "warning")
    issues = validate(good.replace(lora_type="Standard", conv_dim=2, conv_alpha=4), cuda_available=False)
    assert not any(i.code == "conv_alpha_above_rank" for i in issues)


def test_train_unet_only_and_text_encoder_only_both_set(good):
    one(good.replace(network_train_unet_only=True, network_train_text_encoder_only=True), "train_only_conflict",
        "network_train_unet_only", "error")


def test_unet_and_text_encoder_learning_rates_both_zero(good):
    one(good.replace(unet_lr=0.0, text_encoder_lr=0.0), "nothing_to_train", "unet_lr", "error")


def test_constant_scheduler_with_warmup(good):
    one(good.replace(lr_scheduler="constant", lr_warmup_steps=10), "warmup_with_constant", "lr_warmup_steps", "error")


def test_adafactor_scheduler_without_adafactor_optimizer(good):
    one(good.replace(lr_scheduler="adafactor", optimizer_type="AdamW"), "scheduler_needs_adafactor",
        "lr_scheduler", "error")


def test_adafactor_relative_step_with_another_scheduler(good):
    one(good.replace(optimizer_type="Adafactor", optimizer_args="relative_step=True scale_parameter=True",
                     lr_scheduler="cosine"), "adafactor_relative_step", "lr_scheduler", "error")


def test_adafactor_scheduler_ignores_warmup(good):
    one(good.replace(optimizer_type="Adafactor", lr_scheduler="adafactor", lr_warmup_steps=5), "warmup_ignored",
        "lr_warmup_steps", "warning")


def test_warmup_longer_than_the_run(good):
    # 2 images x 10 repeats, batch 1: 20 steps per epoch, 10 epochs = 200 steps
    hit = one(good.replace(lr_scheduler="cosine", lr_warmup_steps=250), "warmup_exceeds_total", "lr_warmup_steps",
              "warning")
    assert hit.params == {"warmup_steps": 250, "total_steps": 200}


# ---- precision and hardware -------------------------------------------------------------------------

def test_full_fp16_and_full_bf16_both(good):
    one(good.replace(full_fp16=True, full_bf16=True, mixed_precision="fp16"), "full_fp16_and_bf16", "full_fp16",
        "error", cuda=True)


def test_full_bf16_without_bf16_mixed_precision(good):
    one(good.replace(full_bf16=True, mixed_precision="fp16"), "full_bf16_needs_bf16", "full_bf16", "error", cuda=True)


def test_full_fp16_without_fp16_mixed_precision(good):
    one(good.replace(full_fp16=True, mixed_precision="no"), "full_fp16_needs_fp16", "full_fp16", "error")


def test_mixed_precision_without_cuda_falls_back_to_fp32(good):
    one(good.replace(mixed_precision="bf16"), "precision_cpu", "mixed_precision", "warning", cuda=False)
    assert validate(good.replace(mixed_precision="bf16"), cuda_available=True) == []


def test_xformers_without_cuda(good):
    one(good.replace(xformers=True), "xformers_without_cuda", "xformers", "error", cuda=False)


def test_xformers_with_cuda_but_not_installed(good, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "xformers" else real(name, *a))
    one(good.replace(xformers=True), "xformers_missing", "xformers", "error", cuda=True)


# ---- data settings ----------------------------------------------------------------------------------

@pytest.mark.parametrize("aug", ["color_aug", "random_crop"])
def test_cache_latents_with_augmentation_that_changes_images(good, aug):
    one(good.replace(cache_latents=True, **{aug: True}), "cache_latents_disabled", "cache_latents", "warning")


def test_max_timestep_not_above_min(good):
    one(good.replace(min_timestep=500, max_timestep=500), "timestep_range_empty", "max_timestep", "error")


def test_resolution_that_does_not_parse(good):
    one(good.replace(resolution="big"), "resolution_invalid", "resolution", "error")


def test_resolution_not_multiple_of_8_without_buckets(good):
    one(good.replace(resolution="100", enable_bucket=False), "resolution_not_multiple_of_8", "resolution", "error")


def test_bucket_steps_not_multiple_of_8(good):
    one(good.replace(bucket_reso_steps=12), "bucket_steps_not_multiple_of_8", "bucket_reso_steps", "error")


def test_bucket_steps_not_multiple_of_64(good):
    one(good.replace(bucket_reso_steps=32, min_bucket_reso=32), "bucket_steps_not_64", "bucket_reso_steps", "warning")


def test_min_bucket_reso_above_max(good):
    one(good.replace(min_bucket_reso=256, max_bucket_reso=128), "bucket_reso_order", "min_bucket_reso", "error")


def test_max_bucket_reso_below_resolution(good):
    one(good.replace(resolution="512", max_bucket_reso=256, min_bucket_reso=64), "max_bucket_below_resolution",
        "max_bucket_reso", "error")


def test_batch_larger_than_a_bucket_names_the_bucket(good):
    make_image_folder(Path(good.train_data_dir) / "1_wide", 1, sizes=[(128, 32)], caption="wide")
    cfg = good.replace(resolution="64", min_bucket_reso=32, max_bucket_reso=128, bucket_reso_steps=32,
                       train_batch_size=4)
    hit = one(cfg, "batch_larger_than_bucket", "train_batch_size", "warning")
    assert "128x32 (1)" in hit.message
    assert hit.params["buckets"] == [{"width": 128, "height": 32, "count": 1}]


# ---- samples ---------------------------------------------------------------------------------------

def test_sample_prompts_without_cadence(good):
    one(good.replace(sample_prompts="sks disc"), "sample_prompts_without_cadence", "sample_every_n_epochs", "warning")


def test_sample_cadence_without_prompts(good):
    one(good.replace(sample_every_n_steps=10), "sample_cadence_without_prompts", "sample_prompts", "warning")


def _function_strings(module) -> tuple[set[str], set[str]]:
    """(codes passed literally to issue(), every string constant inside a function body) of `module`."""
    import ast
    import inspect

    issued, strings = set(), set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "issue":
            code = node.args[2]
            assert isinstance(code, (ast.Constant, ast.Name)), ast.dump(code)
            if isinstance(code, ast.Constant):
                issued.add(code.value)
        if isinstance(node, ast.FunctionDef):
            for part in node.body:
                strings |= {n.value for n in ast.walk(part) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    return issued, strings


def test_codes_are_derived_from_the_rules_declarations():
    """CODES is the union of what the rules declare; each rule module emits only codes its rules declare, and
    every declared code is emitted somewhere (the sample-prompt ones by trainer.prompts)."""
    import ast
    import importlib
    import inspect

    import trainer.prompts as prompts
    from trainer.preflight import RULES

    assert CODES == tuple(dict.fromkeys(code for r in RULES for code in r.codes))
    prompt_codes = {node.args[1].value for node in ast.walk(ast.parse(inspect.getsource(prompts)))
                    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "_problem"}
    declared_by_module: dict[str, set[str]] = {}
    for r in RULES:
        declared_by_module.setdefault(r.check.__module__, set()).update(r.codes)
    for name, declared in declared_by_module.items():
        issued, strings = _function_strings(importlib.import_module(name))
        assert issued <= declared, (name, issued - declared)
        assert declared <= strings | prompt_codes, (name, declared - strings - prompt_codes)
    assert prompt_codes <= set(CODES)
