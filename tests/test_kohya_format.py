"""kohya LoRA files without a model: delta math, reading other spellings, writing, hashes, metadata."""

from __future__ import annotations

import hashlib
import json
import struct

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save, save_file

from trainer.config import TrainConfig
from trainer.fileio import OutputExistsError
from trainer.network.kohya_format import (LoraFile, LoraFormatError, LoraModule, parse_key, read_lora_file,
                                          write_lora_file)
from trainer.network.metadata import RunInfo, build_training_metadata

Q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
TE = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
CONV = "lora_unet_down_blocks_0_resnets_0_conv1"


def sample_lora(big: bool = False) -> LoraFile:
    gen = torch.Generator().manual_seed(0)
    rnd = lambda *shape: torch.randn(*shape, generator=gen)  # noqa: E731
    width = 80_000 if big else 32  # big: 1.3 MB, so the legacy hash reads real bytes
    return LoraFile({
        Q: LoraModule(Q, rnd(4, width), rnd(32, 4), alpha=2.0),
        TE: LoraModule(TE, rnd(4, 32), rnd(32, 4), alpha=1.0),
        CONV: LoraModule(CONV, rnd(3, 32, 3, 3), rnd(32, 3, 1, 1), alpha=6.0),
    }, {"ss_network_dim": "4", "ss_tag_frequency": json.dumps({"10_a": {"a": 1}}), "modelspec.title": "t"})


# ---- delta weights -------------------------------------------------------------------------------
def test_delta_weight_linear_and_convs():
    down, up = torch.randn(4, 10), torch.randn(6, 4)
    torch.testing.assert_close(LoraModule("a", down, up, 2.0).delta_weight(), 0.5 * up @ down)
    torch.testing.assert_close(LoraModule("a", down, up, None).delta_weight(), up @ down)  # alpha None = rank
    torch.testing.assert_close(LoraModule("a", down, up, 0).delta_weight(multiplier=0.3), 0.3 * up @ down)

    down1, up1 = down[:, :, None, None], up[:, :, None, None]
    m1 = LoraModule("c", down1, up1, 8.0)
    assert m1.is_conv and m1.rank == 4 and m1.scale == 2.0
    torch.testing.assert_close(m1.delta_weight(), 2.0 * (up @ down)[:, :, None, None])

    down3, up3 = torch.randn(3, 5, 3, 3), torch.randn(7, 3, 1, 1)
    expected = torch.einsum("or,rikl->oikl", up3[:, :, 0, 0], down3) * 2.0
    torch.testing.assert_close(LoraModule("c", down3, up3, 6.0).delta_weight(), expected)
    # sd-scripts' formula (merge_lora / max-norm), and the effect on a conv output.
    kohya = F.conv2d(down3.permute(1, 0, 2, 3), up3).permute(1, 0, 2, 3) * 2.0
    torch.testing.assert_close(LoraModule("c", down3, up3, 6.0).delta_weight(), kohya)
    x = torch.randn(1, 5, 9, 9)
    torch.testing.assert_close(F.conv2d(x, expected, padding=1),
                               F.conv2d(F.conv2d(x, down3, padding=1), up3) * 2.0, rtol=1e-4, atol=1e-5)


# ---- names ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("key,expected", [
    (f"{Q}.lora_down.weight", (Q, "down")),
    (f"{Q}.lora_up.weight", (Q, "up")),
    (f"{Q}.alpha", (Q, "alpha")),
    ("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight", (Q, "down")),
    ("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.default.weight", (Q, "up")),
    ("text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight", (TE, "down")),
    ("text_encoder.encoder.layers.0.self_attn.q_proj.lora_B.weight", (TE, "up")),
    ("lora_te_encoder_layers_0_self_attn_q_proj.lora_down.weight", (TE, "down")),
    ("lora_te2_encoder_layers_0_mlp_fc1.alpha", ("lora_te2_text_model_encoder_layers_0_mlp_fc1", "alpha")),
])
def test_parse_key_spellings(key, expected):
    assert parse_key(key)[:2] == expected


def test_parse_key_rejects_other_formats():
    for key in (f"{Q}.hada_w1_a", f"{Q}.dora_scale", "base_model.model.x.lora_A.weight", "model.diffusion_model.x"):
        assert parse_key(key) is None


def test_from_state_dict_other_spellings_and_errors():
    lf = LoraFile.from_state_dict({
        "lora_te_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.ones(2, 4),
        "lora_te_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.ones(4, 2),
        f"{Q}.hada_w1_a": torch.ones(1),
    })
    assert list(lf.modules) == [TE] and lf.modules[TE].alpha is None and lf.modules[TE].scale == 1.0
    assert lf.unrecognized_keys == [f"{Q}.hada_w1_a"]
    with pytest.raises(LoraFormatError, match="no lora_up"):
        LoraFile.from_state_dict({f"{Q}.lora_down.weight": torch.ones(2, 4), f"{Q}.alpha": torch.tensor(1.0)})
    with pytest.raises(LoraFormatError, match="do not fit"):
        LoraFile.from_state_dict({f"{Q}.lora_down.weight": torch.ones(2, 4), f"{Q}.lora_up.weight": torch.ones(4, 3)})


def test_read_diffusers_file_takes_alpha_from_its_adapter_metadata(tmp_path):
    prefix = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1"
    tensors = {f"{prefix}.to_q.lora_A.weight": torch.ones(4, 32), f"{prefix}.to_q.lora_B.weight": torch.ones(32, 4),
               f"{prefix}.to_k.lora_A.weight": torch.ones(4, 32), f"{prefix}.to_k.lora_B.weight": torch.ones(32, 4)}
    adapter = {"unet.r": 4, "unet.lora_alpha": 2, "unet.alpha_pattern": {"attn1.to_k": 8}}
    path = tmp_path / "pytorch_lora_weights.safetensors"
    save_file(tensors, str(path), {"format": "pt", "lora_adapter_metadata": json.dumps(adapter)})
    lf = read_lora_file(path)
    assert lf.modules[Q].alpha == 2.0
    assert lf.modules[Q.replace("to_q", "to_k")].alpha == 8.0


# ---- writing -------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision,dtype", [("float", torch.float32), ("fp16", torch.float16),
                                             ("bf16", torch.bfloat16)])
def test_write_read_round_trip(tmp_path, precision, dtype):
    lora = sample_lora()
    path = tmp_path / "a.safetensors"
    written = write_lora_file(path, lora, save_precision=precision)
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        metadata = f.metadata()
        alpha = f.get_tensor(f"{CONV}.alpha")
    assert keys == {f"{n}.{s}" for n in (Q, TE, CONV) for s in ("lora_down.weight", "lora_up.weight", "alpha")}
    assert alpha.dim() == 0 and alpha.dtype == dtype and alpha.item() == 6.0
    assert metadata == written and all(isinstance(v, str) for v in metadata.values())
    back = read_lora_file(path)
    assert back.metadata == metadata
    for name, m in lora.modules.items():
        assert back.modules[name].down.dtype == dtype
        torch.testing.assert_close(back.modules[name].down, m.down.to(dtype))
        torch.testing.assert_close(back.modules[name].up, m.up.to(dtype))
        assert back.modules[name].alpha == m.alpha


@pytest.mark.parametrize("suffix", [".ckpt", ".pt"])
def test_torch_formats_hold_the_same_dict(tmp_path, suffix):
    lora = sample_lora()
    path = tmp_path / f"a{suffix}"
    assert write_lora_file(path, lora, save_precision="float") == {}
    raw = torch.load(path, weights_only=True)
    assert set(raw) == set(lora.state_dict())
    back = read_lora_file(path)
    torch.testing.assert_close(back.modules[CONV].delta_weight(), lora.modules[CONV].delta_weight())


def test_hashes_match_sd_scripts_definition(tmp_path):
    lora = sample_lora(big=True)
    path = tmp_path / "big.safetensors"
    meta = write_lora_file(path, lora, save_precision="float")
    blob = path.read_bytes()
    assert len(blob) > 0x110000
    (header_len,) = struct.unpack("<Q", blob[:8])
    model_hash = hashlib.sha256(blob[8 + header_len:]).hexdigest()
    assert meta["sshs_model_hash"] == model_hash
    assert meta["modelspec.hash_sha256"] == "0x" + model_hash
    # The legacy hash reads 64 KiB at 1 MiB of the file as it is with only the ss_* metadata.
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    ss_only = save(tensors, {k: v for k, v in meta.items() if k.startswith("ss_")})
    assert meta["sshs_legacy_hash"] == hashlib.sha256(ss_only[0x100000:0x110000]).hexdigest()[:8]
    assert len(meta["sshs_legacy_hash"]) == 8

    # Non-ss metadata does not change either hash; an ss_* key changes the header, so the legacy hash.
    again = LoraFile(lora.modules, {**lora.metadata, "modelspec.title": "other", "note": "x"})
    meta2 = write_lora_file(tmp_path / "b.safetensors", again, save_precision="float")
    assert (meta2["sshs_model_hash"], meta2["sshs_legacy_hash"]) == (meta["sshs_model_hash"], meta["sshs_legacy_hash"])
    meta3 = write_lora_file(tmp_path / "c.safetensors", LoraFile(lora.modules, {**lora.metadata, "ss_seed": "1"}),
                            save_precision="float")
    assert meta3["sshs_model_hash"] == meta["sshs_model_hash"] and meta3["sshs_legacy_hash"] != meta["sshs_legacy_hash"]


def test_rewriting_a_read_file_recomputes_hashes(tmp_path):
    write_lora_file(tmp_path / "a.safetensors", sample_lora(), save_precision="fp16")
    lf = read_lora_file(tmp_path / "a.safetensors")
    meta = write_lora_file(tmp_path / "b.safetensors", lf, save_precision="float")  # other bytes now
    blob = (tmp_path / "b.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    assert meta["sshs_model_hash"] == hashlib.sha256(blob[8 + n:]).hexdigest()
    assert "modelspec.hash_sha256" in meta
    no_spec = write_lora_file(tmp_path / "c.safetensors", LoraFile(lf.modules, {"ss_a": "1"}))
    assert "modelspec.hash_sha256" not in no_spec


def test_exclusive_and_atomic(tmp_path):
    path = tmp_path / "a.safetensors"
    write_lora_file(path, sample_lora())
    original = path.read_bytes()
    with pytest.raises(OutputExistsError):
        write_lora_file(path, LoraFile(sample_lora().modules, {"ss_x": "changed"}))
    assert path.read_bytes() == original
    write_lora_file(path, LoraFile(sample_lora().modules, {"ss_x": "changed"}), exclusive=False)
    assert read_lora_file(path).metadata["ss_x"] == "changed"
    with pytest.raises(OutputExistsError):
        write_lora_file(tmp_path / "a.safetensors", sample_lora())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors"]  # no temporary files left


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="save_precision"):
        write_lora_file(tmp_path / "a.safetensors", sample_lora(), save_precision="fp8")
    with pytest.raises(LoraFormatError):
        write_lora_file(tmp_path / "a.bin", sample_lora())
    with pytest.raises(FileNotFoundError):
        read_lora_file(tmp_path / "missing.safetensors")
    assert list(tmp_path.iterdir()) == []


# ---- metadata ------------------------------------------------------------------------------------
def run_info(**overrides) -> RunInfo:
    values = dict(
        session_id="abc", training_started_at=1700000000.5, training_finished_at=1700000100.25, epoch=2, steps=40,
        max_train_steps=200, num_epochs=10, num_batches_per_epoch=20, num_train_images=40, num_reg_images=0,
        dataset_dirs={"10_sks disc": {"n_repeats": 10, "img_count": 4}}, reg_dataset_dirs={},
        tag_frequency={"10_sks disc": {"sks disc": 4, "red circle": 4}},
        bucket_info={"buckets": {"0": {"resolution": [512, 512], "count": 40}}, "mean_img_ar_error": 0.0},
        base_model_version="sd_v1", modelspec_architecture="stable-diffusion-v1",
        optimizer="torch.optim.adamw.AdamW(weight_decay=0.01)", lr_warmup_steps=0, v2=False, v_parameterization=False)
    values.update(overrides)
    return RunInfo(**values)


def test_training_metadata_sd1_standard():
    cfg = TrainConfig(pretrained_model_name_or_path="runwayml/stable-diffusion-v1-5", output_name="mylora",
                      network_dim=16, network_alpha=8, clip_skip=2, training_comment="sks disc",
                      metadata_author="me", unet_lr=1e-4)
    md = build_training_metadata(cfg, run_info())
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in md.items())
    expected = {
        "ss_network_module": "networks.lora", "ss_network_dim": "16", "ss_network_alpha": "8.0",
        "ss_network_dropout": "0.0", "ss_base_model_version": "sd_v1", "ss_v2": "False",
        "ss_resolution": "(512, 512)", "ss_num_epochs": "10", "ss_epoch": "2", "ss_steps": "40",
        "ss_max_train_steps": "200", "ss_num_train_images": "40", "ss_num_reg_images": "0",
        "ss_num_batches_per_epoch": "20", "ss_optimizer": "torch.optim.adamw.AdamW(weight_decay=0.01)",
        "ss_learning_rate": "0.0001", "ss_unet_lr": "0.0001", "ss_text_encoder_lr": "None",
        "ss_lr_scheduler": "cosine", "ss_lr_warmup_steps": "0", "ss_seed": "42", "ss_clip_skip": "2",
        "ss_max_token_length": "75", "ss_mixed_precision": "fp16", "ss_gradient_checkpointing": "False",
        "ss_gradient_accumulation_steps": "1", "ss_noise_offset": "None", "ss_multires_noise_iterations": "None",
        "ss_min_snr_gamma": "None", "ss_prior_loss_weight": "1.0", "ss_scale_weight_norms": "0.0",
        "ss_caption_dropout_rate": "0.0", "ss_keep_tokens": "0", "ss_shuffle_caption": "False",
        "ss_enable_bucket": "True", "ss_min_bucket_reso": "256", "ss_max_bucket_reso": "1024",
        "ss_cache_latents": "True", "ss_session_id": "abc", "ss_training_started_at": "1700000000.5",
        "ss_training_finished_at": "1700000100.25", "ss_output_name": "mylora", "ss_training_comment": "sks disc",
        "ss_sd_model_name": "runwayml/stable-diffusion-v1-5", "ss_max_grad_norm": "1.0",
        "ss_batch_size_per_device": "1", "ss_total_batch_size": "1", "ss_reg_dataset_dirs": "{}",
        "modelspec.sai_model_spec": "1.0.1", "modelspec.architecture": "stable-diffusion-v1/lora",
        "modelspec.implementation": "diffusers", "modelspec.title": "mylora", "modelspec.author": "me",
        "modelspec.resolution": "512x512", "modelspec.prediction_type": "epsilon",
        "modelspec.timestep_range": "0,1000", "modelspec.encoder_layer": "2",
    }
    assert {k: md.get(k) for k in expected} == expected
    assert "ss_network_args" not in md and "modelspec.license" not in md
    assert json.loads(md["ss_dataset_dirs"]) == {"10_sks disc": {"n_repeats": 10, "img_count": 4}}
    assert json.loads(md["ss_tag_frequency"])["10_sks disc"]["red circle"] == 4
    assert json.loads(md["ss_bucket_info"])["buckets"]["0"]["count"] == 40
    assert md["modelspec.date"].startswith("2023-11-1") and "T" in md["modelspec.date"]


def test_training_metadata_sd2_v_locon(tmp_path):
    model = tmp_path / "my-model.safetensors"
    model.write_bytes(b"x")
    cfg = TrainConfig(pretrained_model_name_or_path=str(model), lora_type="LoCon", conv_dim=8, conv_alpha=4,
                      network_dropout=0.1, resolution="768,640", metadata_title="Disc", noise_offset_type="Multires",
                      multires_noise_iterations=6, multires_noise_discount=0.3, min_snr_gamma=5, lr_warmup_steps=0.1)
    md = build_training_metadata(cfg, run_info(base_model_version="sd_v2_v", modelspec_architecture="",
                                               v2=True, v_parameterization=True, lr_warmup_steps=None))
    assert json.loads(md["ss_network_args"]) == {"conv_dim": "8", "conv_alpha": "4", "dropout": 0.1}
    assert md["ss_v2"] == "True" and md["ss_base_model_version"] == "sd_v2_v"
    assert md["modelspec.architecture"] == "stable-diffusion-v2-768-v/lora"
    assert md["modelspec.prediction_type"] == "v" and md["modelspec.title"] == "Disc"
    assert md["ss_resolution"] == "(768, 640)" and md["modelspec.resolution"] == "768x640"
    assert md["ss_sd_model_name"] == "my-model.safetensors"
    assert (md["ss_noise_offset"], md["ss_multires_noise_iterations"], md["ss_multires_noise_discount"]) == \
        ("None", "6", "0.3")
    assert md["ss_min_snr_gamma"] == "5.0" and md["ss_lr_warmup_steps"] == "0.1"
    assert md["ss_network_dropout"] == "0.1"

    plain = build_training_metadata(TrainConfig(v2=True), RunInfo())
    assert plain["ss_base_model_version"] == "sd_v2"
    assert plain["modelspec.architecture"] == "stable-diffusion-v2-512/lora"
