"""Model families: detection, single-file round trips, loading, prompt encoding, LoRA names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainer.config import TrainConfig
from trainer.families import ModelPathError, detect_model, get_family, load_model, resolve_model_info
from trainer.families.model_info import EMBEDDED_CONFIG_KEY, ModelInfo
from trainer.tiny import build_tiny_pipeline, save_tiny_model

FAMILIES = ("sd1", "sd2", "sd2-v")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Each tiny family as a diffusers folder, a .safetensors and a .ckpt, plus the source pipelines."""
    root = tmp_path_factory.mktemp("families")
    models = {}
    for family in FAMILIES:
        pipe = build_tiny_pipeline(family)
        from trainer.families.single_file import save_single_file

        pipe.save_pretrained(root / family, safe_serialization=True)
        save_single_file(pipe, root / f"{family}.safetensors", family)
        save_single_file(pipe, root / f"{family}.ckpt", family)
        models[family] = dict(pipe=pipe, folder=root / family, file=root / f"{family}.safetensors",
                              ckpt=root / f"{family}.ckpt")
    return models


def _cfg(model, **kw) -> TrainConfig:
    return TrainConfig(pretrained_model_name_or_path=str(model), **kw)


def _assert_same_weights(expected, actual):
    a, b = expected.state_dict(), actual.state_dict()
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]


def _resave_without_markers(src: Path, dst: Path) -> None:
    """The same tensors without the v_pred key and metadata: only the weights can tell v-prediction."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(src))
    tensors.pop("v_pred", None)
    save_file(tensors, str(dst))


# ---- detection ----------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["folder", "file"])
def test_detect(tiny, family, kind):
    info = detect_model(str(tiny[family][kind]))
    assert info.family == ("sd1" if family == "sd1" else "sd2")
    assert info.v2 == family.startswith("sd2")
    assert info.v_parameterization == (family == "sd2-v")
    assert info.kind == ("diffusers" if kind == "folder" else "single_file")


@pytest.mark.parametrize("family", ["sd2", "sd2-v"])
def test_v_prediction_heuristic_from_weights(tiny, tmp_path, family):
    bare = tmp_path / "bare.safetensors"
    _resave_without_markers(tiny[family]["file"], bare)
    info = detect_model(str(bare))
    assert (info.family, info.v_parameterization) == ("sd2", family == "sd2-v")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_files_detect_and_load_as_fp32(tiny, tmp_path, dtype):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    tensors = {k: v.to(dtype) for k, v in load_file(str(tiny["sd2-v"]["file"])).items() if k != "v_pred"}
    save_file(tensors, str(tmp_path / "bare.safetensors"))  # no markers: the heuristic reads a half tensor
    info = resolve_model_info(_cfg(tmp_path / "bare.safetensors"))
    assert (info.family, info.v_parameterization) == ("sd2", True)

    with safe_open(str(tiny["sd2-v"]["file"]), framework="pt") as f:
        metadata = f.metadata()  # the tiny shapes need the embedded configs
    save_file(tensors, str(tmp_path / "half.safetensors"), metadata=metadata)
    _, comp = load_model(_cfg(tmp_path / "half.safetensors"))
    assert {p.dtype for m in (comp.unet, comp.vae, comp.text_encoder) for p in m.parameters()} == {torch.float32}


def test_v_pred_marker_wins(tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(tiny["sd2"]["file"]))
    tensors["v_pred"] = torch.tensor([])
    save_file(tensors, str(tmp_path / "marked.safetensors"))
    assert detect_model(str(tmp_path / "marked.safetensors")).v_parameterization is True


def test_ckpt_is_detected_by_the_engine_not_the_web_process(tiny):
    info = detect_model(str(tiny["sd2-v"]["ckpt"]))  # torch-free: cannot open a pickle
    assert info.family is None and info.notes
    info = resolve_model_info(_cfg(tiny["sd2-v"]["ckpt"]))  # v2 not set: the keys decide
    assert (info.family, info.v2, info.v_parameterization) == ("sd2", True, True)
    family, comp = load_model(_cfg(tiny["sd2-v"]["ckpt"]))
    assert family.name == "sd2" and comp.tokenizer.pad_token == "!"
    _assert_same_weights(tiny["sd2-v"]["pipe"].unet, comp.unet)


def test_detection_errors(tiny, tmp_path):
    from safetensors.numpy import save_file
    import numpy as np

    with pytest.raises(ModelPathError, match="not found"):
        detect_model(str(tmp_path / "missing.safetensors"))
    with pytest.raises(ModelPathError, match="Hugging Face cache"):
        detect_model("someone/not-a-cached-model")
    with pytest.raises(ModelPathError, match="model_index.json"):
        detect_model(str(tiny["sd1"]["folder"] / "vae"))
    save_file({"conditioner.embedders.0.x": np.zeros(1, np.float32),
               "model.diffusion_model.x": np.zeros(1, np.float32)}, str(tmp_path / "xl.safetensors"))
    with pytest.raises(ModelPathError, match="SDXL"):
        detect_model(str(tmp_path / "xl.safetensors"))
    save_file({"lora_unet_x.lora_down.weight": np.zeros(1, np.float32)}, str(tmp_path / "lora.safetensors"))
    with pytest.raises(ModelPathError) as err:
        detect_model(str(tmp_path / "lora.safetensors"))
    assert "LoRA" in err.value.hint
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelPathError, match="Cannot read"):
        detect_model(str(tmp_path / "broken.safetensors"))


def test_resolve_model_info_merges_user_flags(tiny):
    info = resolve_model_info(_cfg(tiny["sd2-v"]["file"]))  # flags unset: detection decides
    assert (info.family, info.v2, info.v_parameterization) == ("sd2", True, True)
    assert any("v-parameterization" in n for n in info.notes)

    info = resolve_model_info(_cfg(tiny["sd2"]["file"], v_parameterization=True))
    assert info.v_parameterization is True and any("as set" in n for n in info.notes)

    info = resolve_model_info(_cfg(tiny["sd1"]["folder"], v2=True))
    assert info.family == "sd1" and not info.v2 and any("SD 1.x" in n for n in info.notes)


def test_hub_id_is_used_only_from_the_local_cache(tiny, tmp_path):
    import shutil

    repo = tmp_path / "hub" / "models--someone--tiny-sd2-v"
    shutil.copytree(tiny["sd2-v"]["folder"], repo / "snapshots" / "0123abc")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    code = ("from trainer.families import detect_model; i = detect_model('someone/tiny-sd2-v'); "
            "assert (i.kind, i.family, i.v_parameterization) == ('hub', 'sd2', True), i; "
            "assert i.path.endswith('0123abc'), i.path")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=env)


def test_detect_does_not_import_torch(tiny):
    code = (f"import sys; from trainer.families import detect_model; "
            f"i = detect_model({str(tiny['sd2-v']['file'])!r}); assert i.v_parameterization; "
            f"detect_model({str(tiny['sd1']['folder'])!r}); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# ---- single files -------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_single_file_round_trip_is_exact(tiny, family):
    from safetensors import safe_open

    with safe_open(str(tiny[family]["file"]), framework="pt") as f:
        keys = set(f.keys())
        assert EMBEDDED_CONFIG_KEY in f.metadata()
    assert all(k.startswith(("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")) or k == "v_pred"
               for k in keys)
    if family == "sd1":
        assert "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight" in keys
    else:
        assert {"cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight",
                "cond_stage_model.model.ln_final.weight", "cond_stage_model.model.positional_embedding",
                "cond_stage_model.model.token_embedding.weight", "cond_stage_model.model.text_projection"} <= keys
    assert ("v_pred" in keys) == (family == "sd2-v")

    pipe = tiny[family]["pipe"]
    for path in (tiny[family]["file"], tiny[family]["ckpt"]):
        _, comp = load_model(_cfg(path))
        _assert_same_weights(pipe.unet, comp.unet)
        _assert_same_weights(pipe.vae, comp.vae)
        _assert_same_weights(pipe.text_encoder, comp.text_encoder)


@pytest.mark.parametrize("family", ["sd1", "sd2"])
def test_real_architecture_keys_map_both_ways(family):
    """Full SD1.5 / SD2.1 layouts (on the meta device): our names are read back by diffusers' converters."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint, convert_open_clip_checkpoint)
    from transformers import CLIPTextConfig, CLIPTextModel

    from trainer.families.ldm_layout import open_clip_to_ldm, unet_to_ldm, vae_to_ldm
    from trainer.families.single_file import bundled_config_dir

    folder = bundled_config_dir(family)
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder, subfolder="unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder, subfolder="vae"))
        te = CLIPTextModel(CLIPTextConfig.from_pretrained(folder, subfolder="text_encoder"))

    ldm_unet = {"model.diffusion_model." + k: v for k, v in unet_to_ldm(unet.state_dict(), unet.config).items()}
    assert {"model.diffusion_model.input_blocks.3.0.op.weight", "model.diffusion_model.output_blocks.2.1.conv.weight",
            "model.diffusion_model.output_blocks.8.2.conv.weight", "model.diffusion_model.middle_block.1.proj_in.weight",
            "model.diffusion_model.input_blocks.4.0.skip_connection.weight",
            "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias"} <= ldm_unet.keys()
    back = convert_ldm_unet_checkpoint(ldm_unet, unet.config)
    assert {k: v.shape for k, v in back.items()} == {k: v.shape for k, v in unet.state_dict().items()}

    ldm_vae = {"first_stage_model." + k: v for k, v in vae_to_ldm(vae.state_dict(), vae.config).items()}
    assert ldm_vae["first_stage_model.decoder.mid.attn_1.q.weight"].shape == (512, 512, 1, 1)
    assert "first_stage_model.decoder.up.3.upsample.conv.weight" in ldm_vae
    back = convert_ldm_vae_checkpoint(ldm_vae, vae.config)
    assert {k: v.shape for k, v in back.items()} == {k: v.shape for k, v in vae.state_dict().items()}

    if family == "sd2":
        ldm_te = {"cond_stage_model.model." + k: v for k, v in open_clip_to_ldm(te.state_dict()).items()}
        assert ldm_te["cond_stage_model.model.transformer.resblocks.22.attn.in_proj_weight"].shape == (3072, 1024)
        back = {k.removeprefix("text_model."): v for k, v in convert_open_clip_checkpoint(te, ldm_te).items()}
        assert {k: v.shape for k, v in back.items()} == {k: v.shape for k, v in te.state_dict().items()}


def test_separate_vae(tiny, tmp_path):
    other = build_tiny_pipeline("sd1", seed=1)
    other.vae.save_pretrained(tmp_path / "vae-folder")
    _, comp = load_model(_cfg(tiny["sd1"]["file"], vae=str(tmp_path / "vae-folder")))
    _assert_same_weights(other.vae, comp.vae)

    # A single file: a full checkpoint's first_stage_model.* keys, or bare LDM VAE keys.
    save_tiny_model(tmp_path / "other.safetensors", "sd1", seed=1)
    _, comp = load_model(_cfg(tiny["sd1"]["folder"], vae=str(tmp_path / "other.safetensors")))
    _assert_same_weights(other.vae, comp.vae)

    from safetensors.torch import load_file, save_file

    bare = {k.removeprefix("first_stage_model."): v for k, v in load_file(str(tmp_path / "other.safetensors")).items()
            if k.startswith("first_stage_model.")}
    save_file(bare, str(tmp_path / "vae.safetensors"))
    _, comp = load_model(_cfg(tiny["sd1"]["folder"], vae=str(tmp_path / "vae.safetensors")))
    _assert_same_weights(other.vae, comp.vae)

    with pytest.raises(ModelPathError) as err:
        load_model(_cfg(tiny["sd1"]["folder"], vae=str(tmp_path / "nope.safetensors")))
    assert err.value.field == "vae"


def test_folder_load_matches_source(tiny):
    family, comp = load_model(_cfg(tiny["sd2-v"]["folder"]))
    _assert_same_weights(tiny["sd2-v"]["pipe"].unet, comp.unet)
    _assert_same_weights(tiny["sd2-v"]["pipe"].text_encoder, comp.text_encoder)
    assert comp.scheduler_config["prediction_type"] == "v_prediction"
    assert comp.scheduler_config["beta_schedule"] == "scaled_linear"
    assert comp.tokenizer.pad_token == "!" and family.latent_scale == 0.18215
    assert not any(p.requires_grad for p in comp.unet.parameters())
    assert {type(p).__name__ for p in comp.unet.attn_processors.values()} == {"AttnProcessor2_0"}


# ---- family behaviour ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def loaded(tiny):
    return {f: load_model(_cfg(tiny[f]["file"])) for f in FAMILIES}


@pytest.mark.parametrize("family", ["sd1", "sd2"])
def test_encode_prompts_shapes_and_clip_skip(loaded, family):
    fam, comp = loaded[family]
    captions = ["a photo of a red disc", "sks disc, " + ", ".join(["red circle"] * 60)]
    with torch.no_grad():
        shapes = {n: fam.encode_prompts(comp, captions, clip_skip=1, max_token_length=n)["encoder_hidden_states"].shape
                  for n in (75, 150, 225)}
        assert shapes == {75: (2, 77, 32), 150: (2, 152, 32), 225: (2, 227, 32)}

        skip1 = fam.encode_prompts(comp, captions, clip_skip=1, max_token_length=75)["encoder_hidden_states"]
        skip2 = fam.encode_prompts(comp, captions, clip_skip=2, max_token_length=75)["encoder_hidden_states"]
        ids = fam.tokenize(comp, captions, max_token_length=75)[:, 0]
        assert torch.allclose(skip1, comp.text_encoder(ids).last_hidden_state)
        assert not torch.allclose(skip1, skip2)
        out = comp.text_encoder(ids, output_hidden_states=True)
        assert torch.allclose(skip2, comp.text_encoder.final_layer_norm(out.hidden_states[-2]))


def test_long_prompt_chunks_follow_sd_scripts(loaded):
    long_caption = " ".join(["red"] * 100)  # 100 tokens + BOS/EOS
    for family, pad in (("sd1", 49407), ("sd2", 0)):
        fam, comp = loaded[family]
        ids = fam.tokenize(comp, [long_caption, "short"], max_token_length=225)
        assert ids.shape == (2, 3, 77)
        assert (ids[:, :, 0] == 49406).all()  # every chunk starts with BOS
        # the caption ends inside chunk 2; chunk 3 is empty: BOS EOS PAD... on SD2, BOS EOS EOS... on SD1
        assert ids[0, 2, 1].item() == 49407 and ids[0, 2, 2].item() == pad
        if family == "sd2":
            assert ids[0, 0, -1].item() == 49407  # a chunk ending in a content token gets EOS
        # the joined hidden states keep BOS + 3 x 75 + the last token
        with torch.no_grad():
            hidden = fam.encode_prompts(comp, [long_caption], clip_skip=1, max_token_length=225)
        chunks = comp.text_encoder(ids[:1].reshape(-1, 77)).last_hidden_state.detach()
        assert torch.allclose(hidden["encoder_hidden_states"][0, 76:151], chunks[1, 1:76])


def test_encode_prompts_is_differentiable(loaded):
    fam, comp = loaded["sd1"]
    layer = comp.text_encoder.encoder.layers[0].self_attn.q_proj
    layer.weight.requires_grad_(True)
    try:
        out = fam.encode_prompts(comp, ["a disc"], clip_skip=2, max_token_length=150)["encoder_hidden_states"]
        out.sum().backward()
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    finally:
        layer.weight.requires_grad_(False)
        layer.weight.grad = None


def test_predict_and_v_prediction_target(loaded):
    from trainer.training.noise import NoiseSchedule

    fam, comp = loaded["sd2-v"]
    schedule = NoiseSchedule.from_scheduler_config(comp.scheduler_config)
    assert schedule.prediction_type == "v_prediction" and len(schedule.alphas_cumprod) == 1000
    latents, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = torch.tensor([10, 900])
    target = schedule.target(latents, noise, t)
    a = schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
    assert torch.allclose(target, a.sqrt() * noise - (1 - a).sqrt() * latents, atol=1e-6)

    eps_comp = loaded["sd2"][1]
    assert torch.equal(NoiseSchedule.from_scheduler_config(eps_comp.scheduler_config).target(latents, noise, t), noise)
    with torch.no_grad():
        cond = fam.encode_prompts(comp, ["a", "b"], clip_skip=1, max_token_length=75)
        assert fam.predict(comp, schedule.add_noise(latents, noise, t), t, cond, {}).shape == latents.shape


def test_gradient_checkpointing_and_attention(loaded):
    from trainer.families.base import XformersUnavailableError

    fam, comp = loaded["sd1"]
    fam.enable_gradient_checkpointing(comp, text_encoder=True)
    assert comp.unet.is_gradient_checkpointing and comp.text_encoder.is_activation_checkpointing
    comp.unet.disable_gradient_checkpointing()
    comp.text_encoder.activation_checkpointing_disable()
    if not torch.cuda.is_available():
        with pytest.raises(XformersUnavailableError) as err:
            fam.enable_xformers(comp)
        assert err.value.field == "xformers"


def test_lora_names_and_versions(loaded):
    fam, comp = loaded["sd1"]
    unet_root, te_root = fam.lora_roots(comp)
    assert (unet_root.prefix, unet_root.kind, te_root.prefix, te_root.kind) == (
        "lora_unet", "unet", "lora_te", "text_encoder")
    assert dict(comp.text_encoder.named_modules())["encoder.layers.0.self_attn.q_proj"]
    assert fam.kohya_module_name(te_root, "encoder.layers.0.self_attn.q_proj") == \
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    assert fam.kohya_module_name(unet_root, "down_blocks.0.attentions.0.proj_in") == \
        "lora_unet_down_blocks_0_attentions_0_proj_in"

    versions = {}
    for family, info in [("sd1", ModelInfo("sd1", False, False, "diffusers", "")),
                         ("sd2", ModelInfo("sd2", True, False, "diffusers", "")),
                         ("sd2-v", ModelInfo("sd2", True, True, "diffusers", ""))]:
        f = get_family(info)
        versions[family] = (f.base_model_version(info), f.modelspec_architecture(info), f.traits.default_resolution)
    assert versions == {"sd1": ("sd_v1", "stable-diffusion-v1", 512),
                        "sd2": ("sd_v2", "stable-diffusion-v2-512", 512),
                        "sd2-v": ("sd_v2_v", "stable-diffusion-v2-768-v", 768)}


def test_bundled_configs_are_real_sd_architectures():
    from trainer.families.traits import CONFIGS_DIR

    sd1 = json.loads((CONFIGS_DIR / "sd15" / "unet" / "config.json").read_text())
    sd2 = json.loads((CONFIGS_DIR / "sd21" / "unet" / "config.json").read_text())
    assert sd1["cross_attention_dim"] == 768 and sd1["block_out_channels"] == [320, 640, 1280, 1280]
    assert sd2["cross_attention_dim"] == 1024 and sd2["use_linear_projection"] is True
    te2 = json.loads((CONFIGS_DIR / "sd21" / "text_encoder" / "config.json").read_text())
    assert (te2["hidden_size"], te2["num_hidden_layers"], te2["hidden_act"]) == (1024, 23, "gelu")
