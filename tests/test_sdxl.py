"""SDXL: detection, SGM single files, kohya SDXL LoRA names, diffusers interop, text-encoder output cache.

Everything runs on the tiny SDXL-layout model (trainer.tiny "sdxl"): three down blocks (the first
without attention), two layers per block, transformer depth (1, 1, 2), so its SGM block indices are
those of real SDXL; two text encoders 32 and 64 wide.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import dump, make_run_config, run_engine
from trainer.config import TrainConfig
from trainer.families import ModelPathError, detect_model, load_model, resolve_model_info
from trainer.tiny import build_tiny_pipeline, make_image_folder

CAPTION = "sks disc, red circle"


@pytest.fixture(scope="module")
def xl(tmp_path_factory):
    """The tiny SDXL pipeline as a diffusers folder, an SGM .safetensors and an SGM .ckpt."""
    from trainer.families.single_file import save_single_file

    root = tmp_path_factory.mktemp("sdxl")
    pipe = build_tiny_pipeline("sdxl")
    pipe.save_pretrained(root / "folder", safe_serialization=True)
    save_single_file(pipe, root / "tiny-sdxl.safetensors", "sdxl")
    save_single_file(pipe, root / "tiny-sdxl.ckpt", "sdxl")
    return dict(pipe=pipe, folder=root / "folder", file=root / "tiny-sdxl.safetensors",
                ckpt=root / "tiny-sdxl.ckpt")


def _cfg(model, **kw) -> TrainConfig:
    return TrainConfig(pretrained_model_name_or_path=str(model), **kw)


def _images(root: Path, subset: str = "2_sks disc", count: int = 2) -> Path:
    make_image_folder(root / subset, count, sizes=[(64, 64), (96, 64)], caption=CAPTION)
    return root


def _events_of(events, kind: str) -> list[dict]:
    return [e for e in events if e["type"] == kind]


def _completed(proc, events) -> None:
    done = _events_of(events, "done")
    assert proc.returncode == 0 and done and done[-1]["status"] == "completed", proc.stderr[-3000:] + dump(events)


# ---- detection and single files ----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["folder", "file"])
def test_detect_sdxl(xl, kind):
    info = detect_model(str(xl[kind]))
    assert (info.family, info.v2, info.v_parameterization) == ("sdxl", False, False)
    assert info.kind == ("diffusers" if kind == "folder" else "single_file")


def test_ckpt_detected_when_loaded_and_v2_flag_only_noted(xl):
    assert detect_model(str(xl["ckpt"])).family is None  # torch-free: a pickle is opened by the engine
    info = resolve_model_info(_cfg(xl["ckpt"], v2=True))
    assert (info.family, info.v2) == ("sdxl", False)
    assert any("SDXL" in note for note in info.notes)


def test_refiner_and_incomplete_sdxl_are_refused(tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    unet = {"model.diffusion_model.input_blocks.0.0.weight": np.zeros(1, np.float32)}
    save_file({**unet, "conditioner.embedders.0.model.ln_final.weight": np.zeros(1, np.float32)},
              str(tmp_path / "refiner.safetensors"))
    with pytest.raises(ModelPathError, match="refiner"):
        detect_model(str(tmp_path / "refiner.safetensors"))
    save_file({**unet, "conditioner.embedders.0.transformer.text_model.x": np.zeros(1, np.float32)},
              str(tmp_path / "half.safetensors"))
    with pytest.raises(ModelPathError, match="two SDXL text encoders"):
        detect_model(str(tmp_path / "half.safetensors"))
    folder = tmp_path / "refiner"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionXLImg2ImgPipeline", "text_encoder": [None, None],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"]}))
    with pytest.raises(ModelPathError, match="refiner"):
        detect_model(str(folder))


def test_sgm_single_file_layout(xl):
    from safetensors import safe_open

    with safe_open(str(xl["file"]), framework="pt") as f:
        keys = set(f.keys())
        projection = f.get_tensor("conditioner.embedders.1.model.text_projection")
    for key in ("model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight",
                "model.diffusion_model.input_blocks.8.1.transformer_blocks.1.ff.net.2.weight",
                "model.diffusion_model.input_blocks.3.0.op.weight",
                "model.diffusion_model.middle_block.1.proj_in.weight",
                "model.diffusion_model.output_blocks.2.2.conv.weight",
                "model.diffusion_model.output_blocks.8.0.skip_connection.weight",
                "model.diffusion_model.label_emb.0.0.weight", "model.diffusion_model.label_emb.0.2.bias",
                "conditioner.embedders.0.transformer.text_model.encoder.layers.4.self_attn.q_proj.weight",
                "conditioner.embedders.1.model.transformer.resblocks.4.attn.in_proj_weight",
                "conditioner.embedders.1.model.positional_embedding", "conditioner.embedders.1.model.logit_scale",
                "first_stage_model.decoder.mid.attn_1.q.weight"):
        assert key in keys, key
    assert not any(".attentions." in k or "down_blocks" in k for k in keys)
    # OpenCLIP multiplies by text_projection from the right: (hidden 64, projection 32).
    torch.testing.assert_close(projection, xl["pipe"].text_encoder_2.text_projection.weight.T, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["folder", "file", "ckpt"])
def test_load_is_exact(xl, kind):
    family, comp = load_model(_cfg(xl[kind]))
    assert family.name == "sdxl" and family.latent_scale == 0.13025
    pipe = xl["pipe"]
    pairs = [(pipe.unet, comp.unet), (pipe.vae, comp.vae), (pipe.text_encoder, comp.text_encoders[0]),
             (pipe.text_encoder_2, comp.text_encoders[1])]
    for expected, actual in pairs:
        a, b = expected.state_dict(), actual.state_dict()
        assert a.keys() == b.keys()
        assert not [k for k in a if not torch.equal(a[k], b[k])]
    assert [t.pad_token for t in comp.tokenizers] == ["<|endoftext|>", "!"]


# ---- conditioning ------------------------------------------------------------------------------
def test_encode_prompts_matches_the_diffusers_pipeline(xl):
    family, comp = load_model(_cfg(xl["folder"]))
    captions = ["a photo of a cat", CAPTION]
    with torch.no_grad():
        ours = family.encode_prompts(comp, captions, clip_skip=2)  # clip_skip is ignored
        embeds, _, pooled, _ = xl["pipe"].encode_prompt(captions, do_classifier_free_guidance=False)
        long = family.encode_prompts(comp, captions, max_token_length=150)
    assert ours["encoder_hidden_states"].shape == (2, 77, 32 + 64)
    torch.testing.assert_close(ours["encoder_hidden_states"], embeds, rtol=0, atol=0)
    torch.testing.assert_close(ours["text_embeds"], pooled, rtol=0, atol=0)
    assert long["encoder_hidden_states"].shape == (2, 152, 96)
    torch.testing.assert_close(long["text_embeds"], pooled, rtol=0, atol=1e-6)  # pooled from the first chunk


def test_time_ids_come_from_the_batch(xl):
    family, comp = load_model(_cfg(xl["folder"]))
    latents = torch.zeros(2, 4, 8, 12)
    batch = {"original_sizes": torch.tensor([[80, 120], [64, 96]]), "crop_top_lefts": torch.tensor([[3, 5], [0, 0]]),
             "target_sizes": torch.tensor([[64, 96], [64, 96]])}
    assert family.time_ids(comp, batch, latents).tolist() == [[80, 120, 3, 5, 64, 96], [64, 96, 0, 0, 64, 96]]
    assert family.time_ids(comp, None, latents).tolist() == [[64, 96, 0, 0, 64, 96]] * 2


def test_vae_runs_in_fp32_under_fp16():
    from trainer.families.sd import SD1Family
    from trainer.families.sdxl import SDXLFamily

    dtype, note = SDXLFamily().vae_dtype(torch.float16, no_half_vae=False)
    assert dtype == torch.float32 and "NaN" in note
    assert SDXLFamily().vae_dtype(torch.bfloat16, no_half_vae=False) == (torch.bfloat16, "")
    assert SD1Family().vae_dtype(torch.float16, no_half_vae=False) == (torch.float16, "")
    assert SD1Family().vae_dtype(torch.float16, no_half_vae=True) == (torch.float32, "")


# ---- LoRA names -------------------------------------------------------------------------------
LAYER_MODULES = ("attn1_to_q", "attn1_to_k", "attn1_to_v", "attn1_to_out_0", "attn2_to_q", "attn2_to_k",
                 "attn2_to_v", "attn2_to_out_0", "ff_net_0_proj", "ff_net_2")
TE_MODULES = ("self_attn_q_proj", "self_attn_k_proj", "self_attn_v_proj", "self_attn_out_proj", "mlp_fc1", "mlp_fc2")


def expected_kohya_names() -> set[str]:
    """kohya's SDXL module names for the tiny layout, written out from the SGM block numbering.

    Transformer depth per SGM block: 1 in input blocks 4/5, 2 in 7/8 and in the middle block, 2 in
    output blocks 0-2 and 1 in 3-5 (the up path mirrors the down path). Each text encoder has 5 layers.
    """
    depth = {"input_blocks_4_1": 1, "input_blocks_5_1": 1, "input_blocks_7_1": 2, "input_blocks_8_1": 2,
             "middle_block_1": 2, **{f"output_blocks_{i}_1": 2 for i in range(3)},
             **{f"output_blocks_{i}_1": 1 for i in range(3, 6)}}
    names = set()
    for block, layers in depth.items():
        names |= {f"lora_unet_{block}_proj_in", f"lora_unet_{block}_proj_out"}
        names |= {f"lora_unet_{block}_transformer_blocks_{n}_{m}" for n in range(layers) for m in LAYER_MODULES}
    for te in ("lora_te1", "lora_te2"):
        names |= {f"{te}_text_model_encoder_layers_{n}_{m}" for n in range(5) for m in TE_MODULES}
    return names


def test_locon_names_use_sgm_resnet_and_sampler_names(xl):
    from trainer.network.lora import LoraNetwork, NetworkSpec

    family, comp = load_model(_cfg(xl["folder"]))
    network = LoraNetwork.inject(family, comp, NetworkSpec(rank=4, alpha=1, conv_rank=2, conv_alpha=1))
    names = set(network.loras)
    assert expected_kohya_names() <= names
    for name in ("lora_unet_input_blocks_1_0_in_layers_2", "lora_unet_input_blocks_1_0_out_layers_3",
                 "lora_unet_input_blocks_1_0_emb_layers_1", "lora_unet_input_blocks_4_0_skip_connection",
                 "lora_unet_input_blocks_3_0_op", "lora_unet_input_blocks_6_0_op",
                 "lora_unet_middle_block_2_in_layers_2", "lora_unet_output_blocks_2_2_conv",
                 "lora_unet_output_blocks_5_2_conv", "lora_unet_output_blocks_8_0_skip_connection"):
        assert name in names, name
    assert network.loras["lora_unet_input_blocks_3_0_op"].lora_down.weight.shape[0] == 2  # conv rank
    assert network.loras["lora_unet_input_blocks_1_0_emb_layers_1"].lora_down.weight.shape[0] == 4
    assert not [n for n in names if "down_blocks" in n or "attentions" in n or "resnets" in n]


def test_text_encoder_switches(xl):
    from trainer.network.lora import LoraNetwork, NetworkSpec

    family, comp = load_model(_cfg(xl["folder"], network_train_text_encoder_1=False))
    names = LoraNetwork.inject(family, comp, NetworkSpec(rank=4)).loras.keys()
    assert not [n for n in names if n.startswith("lora_te1_")]
    assert len([n for n in names if n.startswith("lora_te2_")]) == 30


@pytest.fixture(scope="module")
def trained(xl, tmp_path_factory):
    """One engine epoch on the single file: UNet and both text encoders, clip_skip 2, a sample at the end."""
    tmp = tmp_path_factory.mktemp("trained")
    cfg = make_run_config(tmp, xl["file"], _images(tmp / "img"), max_train_epochs=1, learning_rate=1e-2,
                          clip_skip=2, sample_every_n_epochs=1, sample_prompts="sks disc --w 64 --h 64 --s 2")
    proc, events = run_engine(cfg, tmp)
    _completed(proc, events)
    return cfg, Path(cfg.output_dir) / "tiny.safetensors", events


def test_engine_writes_kohya_sdxl_names_and_metadata(trained):
    from safetensors import safe_open

    _, path, events = trained
    with safe_open(str(path), framework="pt") as f:
        keys, metadata = set(f.keys()), f.metadata()
    modules = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in keys}
    assert modules == expected_kohya_names()
    assert keys == {f"{m}.{s}" for m in modules for s in ("lora_down.weight", "lora_up.weight", "alpha")}
    counts = {p: len([m for m in modules if m.startswith(p + "_")]) for p in ("lora_unet", "lora_te1", "lora_te2")}
    assert counts == {"lora_unet": 192, "lora_te1": 30, "lora_te2": 30}
    for name in ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q",
                 "lora_unet_input_blocks_8_1_transformer_blocks_1_attn2_to_k",
                 "lora_unet_middle_block_1_transformer_blocks_1_ff_net_0_proj",
                 "lora_unet_output_blocks_0_1_proj_in", "lora_unet_output_blocks_5_1_transformer_blocks_0_attn2_to_out_0",
                 "lora_te1_text_model_encoder_layers_0_self_attn_q_proj", "lora_te2_text_model_encoder_layers_4_mlp_fc2"):
        assert name in modules, name
    assert metadata["ss_base_model_version"] == "sdxl_base_v1-0"
    assert metadata["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert metadata["modelspec.implementation"] == "https://github.com/Stability-AI/generative-models"
    assert metadata["ss_v2"] == "False"

    warnings = [e for e in events if e["type"] == "warning" and e["code"] == "clip_skip_ignored"]
    assert len(warnings) == 1 and warnings[0]["field"] == "clip_skip"
    samples = _events_of(events, "sample")
    assert samples and all(Path(p).is_file() for p in samples[0]["paths"])


def _outputs(unet, text_encoders, captions=(CAPTION, "a photo of a cat")):
    """UNet output and both text encoders' hidden states and pooled output, for fixed inputs."""
    from transformers import CLIPTokenizer

    from trainer.families.tokenizers import load_clip_tokenizer

    tokenizer: CLIPTokenizer = load_clip_tokenizer()
    ids = tokenizer(list(captions), padding="max_length", max_length=77, return_tensors="pt").input_ids
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 8, 12, generator=g)
    hidden = torch.randn(2, 77, 96, generator=g)
    added = {"text_embeds": torch.randn(2, 32, generator=g), "time_ids": torch.tensor([[64., 96, 0, 0, 64, 96]] * 2)}
    with torch.no_grad():
        te1 = text_encoders[0](ids, output_hidden_states=True).hidden_states[-2]
        out2 = text_encoders[1](ids, output_hidden_states=True)
        unet = unet(x, torch.tensor([10, 700]), encoder_hidden_states=hidden, added_cond_kwargs=added).sample
    return {"unet": unet, "te1": te1, "te2": out2.hidden_states[-2], "te2 pooled": out2.text_embeds}


def test_diffusers_load_lora_weights_matches_engine_model(xl, trained):
    """Our engine file, read back into our network and into diffusers' SDXL kohya loader, gives the same
    UNet and text-encoder outputs; both differ visibly from the base model."""
    from diffusers import StableDiffusionXLPipeline

    from trainer.network.kohya_format import read_lora_file
    from trainer.network.lora import LoraNetwork, NetworkSpec

    cfg, path, _ = trained
    family, comp = load_model(cfg)
    network = LoraNetwork.inject(family, comp, NetworkSpec.from_config(cfg))
    report = network.load_lora_file(read_lora_file(path))
    assert len(report.loaded) == 252 and not report.missing and not report.unexpected
    ours = _outputs(comp.unet, comp.text_encoders)

    pipe = StableDiffusionXLPipeline.from_pretrained(xl["folder"], local_files_only=True)
    base = _outputs(pipe.unet, [pipe.text_encoder, pipe.text_encoder_2])
    pipe.load_lora_weights(str(path))
    theirs = _outputs(pipe.unet, [pipe.text_encoder, pipe.text_encoder_2])
    for label in ours:
        assert (ours[label] - base[label]).abs().max() > 1e-4, f"{label}: the LoRA has no visible effect"
        torch.testing.assert_close(ours[label], theirs[label], rtol=0, atol=1e-5, msg=lambda m: f"{label}: {m}")


def test_diffusers_loads_sdxl_locon_identically(xl, tmp_path):
    """LoCon (resnet, downsampler and upsampler convs under SGM names) with random non-zero weights."""
    from diffusers import StableDiffusionXLPipeline

    from trainer.network.kohya_format import write_lora_file
    from trainer.network.lora import LoraNetwork, NetworkSpec

    family, comp = load_model(_cfg(xl["folder"]))
    network = LoraNetwork.inject(family, comp, NetworkSpec(rank=4, alpha=2, conv_rank=2, conv_alpha=1))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in network.loras.values():
            module.lora_up.weight.copy_(torch.randn(module.lora_up.weight.shape, generator=g) * 0.05)
    write_lora_file(tmp_path / "locon.safetensors", network.to_lora_file({}), save_precision="float")
    ours = _outputs(comp.unet, comp.text_encoders)

    pipe = StableDiffusionXLPipeline.from_pretrained(xl["folder"], local_files_only=True)
    pipe.load_lora_weights(str(tmp_path / "locon.safetensors"))
    theirs = _outputs(pipe.unet, [pipe.text_encoder, pipe.text_encoder_2])
    for label in ours:
        torch.testing.assert_close(ours[label], theirs[label], rtol=0, atol=1e-5, msg=lambda m: f"{label}: {m}")


# ---- text-encoder output cache -------------------------------------------------------------------
def _first_loss(events) -> float:
    return _events_of(events, "step")[0]["loss"]


def test_cached_text_encoder_outputs_give_the_live_loss(xl, tmp_path):
    losses = {}
    images = _images(tmp_path / "img", "1_sks disc")
    for name, cache in (("live", False), ("cached", True)):
        cfg = make_run_config(tmp_path / name, xl["file"], images, max_train_steps=2, network_train_unet_only=True,
                              cache_text_encoder_outputs_to_disk=cache)
        proc, events = run_engine(cfg, tmp_path / name)
        _completed(proc, events)
        losses[name] = _first_loss(events)
        logs = " ".join(e["message"] for e in _events_of(events, "log"))
        assert ("cached text-encoder outputs of 1 caption(s)" in logs) == cache, logs
    assert losses["cached"] == losses["live"]
    assert sorted(p.name for p in images.rglob("*_te_outputs.npz")) == ["img_000_te_outputs.npz",
                                                                       "img_001_te_outputs.npz"]


def test_text_cache_files_are_reused_only_for_the_same_caption_and_model(tmp_path):
    from trainer.training.text_cache import cache_text_encoder_outputs

    images = make_image_folder(tmp_path / "img", 3)
    calls: list[list[str]] = []

    def encode(captions):
        calls.append(captions)
        return {"encoder_hidden_states": torch.full((len(captions), 2, 3), float(len(captions[0]))),
                "text_embeds": torch.ones(len(captions), 4)}

    items = [(images[0], "a"), (images[1], "a"), (images[2], "bb")]
    cache, report = cache_text_encoder_outputs(items, encode, encoder_id="m1", to_disk=True)
    assert calls == [["a"], ["bb"]] and report.written_to_disk == 3 and set(cache) == {"a", "bb"}
    assert cache["bb"]["encoder_hidden_states"].shape == (1, 2, 3)

    calls.clear()
    _, report = cache_text_encoder_outputs(items, encode, encoder_id="m1", to_disk=True)
    assert calls == [] and report.reused_from_disk == 3
    _, report = cache_text_encoder_outputs([(images[0], "a"), (images[2], "changed")], encode,
                                           encoder_id="m1", to_disk=True)
    assert calls == [["changed"]] and report.reused_from_disk == 1
    calls.clear()
    cache_text_encoder_outputs(items[:1], encode, encoder_id="another model", to_disk=True)
    assert calls == [["a"]]


# ---- validation ---------------------------------------------------------------------------------
def _codes(cfg) -> dict[str, str]:
    from trainer.validation import validate

    return {i.code: i.level for i in validate(cfg, cuda_available=False)}


def test_validation_rules_for_sdxl_and_text_encoder_cache(xl, tmp_path):
    base = make_run_config(tmp_path, xl["file"], _images(tmp_path / "img"), network_train_unet_only=True)
    assert not [c for c, level in _codes(base).items() if level == "error"]

    codes = _codes(base.replace(cache_text_encoder_outputs=True, shuffle_caption=True))
    assert codes.get("te_cache_caption_changes") == "error"
    codes = _codes(base.replace(cache_text_encoder_outputs=True, caption_dropout_rate=0.1))
    assert codes.get("te_cache_caption_changes") == "error"
    codes = _codes(base.replace(cache_text_encoder_outputs_to_disk=True, network_train_unet_only=False))
    assert codes.get("te_cache_with_te_training") == "error"
    codes = _codes(base.replace(cache_text_encoder_outputs=True, network_train_unet_only=False,
                                network_train_text_encoder_1=False, network_train_text_encoder_2=False))
    assert "te_cache_with_te_training" not in codes  # neither encoder gets a LoRA

    assert _codes(base.replace(clip_skip=2)).get("clip_skip_ignored") == "warning"
    codes = _codes(base.replace(bucket_reso_steps=48))
    assert codes.get("bucket_steps_not_32") == "error" and "bucket_steps_not_64" not in codes
    assert "bucket_steps_not_64" not in _codes(base.replace(bucket_reso_steps=32))
    codes = _codes(base.replace(unet_lr=0.0, network_train_unet_only=False, network_train_text_encoder_1=False,
                                network_train_text_encoder_2=False))
    assert codes.get("nothing_to_train") == "error"

    from trainer.validation import family_issues

    assert [i.code for i in family_issues(base.replace(mixed_precision="fp16", no_half_vae=False), "sdxl",
                                          cuda=True)] == ["sdxl_vae_fp32"]
    assert family_issues(base.replace(clip_skip=2, bucket_reso_steps=48), "sd1") == []
