"""The tools on full (tiny, random-weight) SD1 models: extract from checkpoints, merge into a checkpoint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainer.network.kohya_format import LoraFile, LoraModule, read_lora_file, write_lora_file
from trainer.tools.models import load_base_model, module_weights, save_model

ROOT = Path(__file__).resolve().parent.parent
CHANGED = {
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": 2,
    "lora_unet_down_blocks_0_attentions_0_proj_in": 2,  # 1×1 conv on SD1
    "lora_unet_down_blocks_0_resnets_0_conv1": 2,  # 3×3 conv
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj": 2,
}


def tools(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "trainer.tools", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc


def test_module_weights_use_kohya_names(tiny_sd1):
    weights = module_weights(load_base_model(tiny_sd1), conv=True)
    for name in CHANGED:
        assert name in weights
    assert weights["lora_unet_down_blocks_0_resnets_0_conv1"].ndim == 4
    plain = module_weights(load_base_model(tiny_sd1), conv=False)
    assert "lora_unet_down_blocks_0_resnets_0_conv1" not in plain and len(plain) < len(weights)


@pytest.fixture(scope="module")
def tuned_model(tiny_sd1, tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """The tiny SD1 model with known rank-2 changes in four layers, saved as a single file."""
    model = load_base_model(tiny_sd1)
    weights = module_weights(model, conv=True)
    gen = torch.Generator().manual_seed(0)
    known = {}
    for name, rank in CHANGED.items():
        w = weights[name]
        d = torch.randn(w.shape[0], rank, generator=gen) @ torch.randn(rank, w[0].numel(), generator=gen)
        known[name] = 0.05 * d.reshape(w.shape)
        with torch.no_grad():
            w.add_(known[name])
    path = tmp_path_factory.mktemp("tuned") / "tuned.safetensors"
    save_model(model, path)
    return path, known


def test_extract_from_checkpoints(tiny_sd1, tuned_model, tmp_path):
    tuned, known = tuned_model
    out = tmp_path / "extracted.safetensors"
    proc = tools("extract", "--model_org", str(tiny_sd1), "--model_tuned", str(tuned), "--dim", "2",
                 "--conv_dim", "2", "--clamp_quantile", "1", "--save_to", str(out))
    lora = read_lora_file(out)
    assert set(lora.modules) == set(CHANGED), proc.stdout  # unchanged layers are left out
    for name, delta in known.items():
        assert torch.allclose(lora.modules[name].delta_weight(), delta, atol=1e-4)
    assert lora.metadata["ss_base_model_version"] == "sd_v1"
    assert lora.metadata["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert lora.metadata["ss_network_dim"] == "2"


def test_merge_into_checkpoint(tiny_sd1, tmp_path):
    base = module_weights(load_base_model(tiny_sd1), conv=True)
    gen = torch.Generator().manual_seed(1)
    modules = {}
    for name in CHANGED:
        w = base[name]
        down = torch.randn(3, *w.shape[1:], generator=gen)
        up = torch.randn(w.shape[0], 3, *([1, 1] if w.ndim == 4 else []), generator=gen) * 0.01
        modules[name] = LoraModule(name, down, up, 1.5)
    lora_path = tmp_path / "style.safetensors"
    write_lora_file(lora_path, LoraFile(modules, {}), save_precision="float")
    out = tmp_path / "merged.safetensors"
    proc = tools("merge", "--sd_model", str(tiny_sd1), "--models", str(lora_path), "--ratios", "0.8",
                 "--save_to", str(out))
    assert "4 modules merged" in proc.stdout
    merged = module_weights(load_base_model(out), conv=True)
    for name, weight in merged.items():
        expected = base[name] + (modules[name].delta_weight(0.8) if name in modules else 0.0)
        assert torch.allclose(weight, expected, atol=1e-6), name


def test_checkpoint_merge_equals_diffusers_lora(tiny_sd1, tmp_path):
    """merge --sd_model gives the same UNet and text-encoder outputs as diffusers applying the LoRA."""
    from diffusers import StableDiffusionPipeline

    from trainer.config import TrainConfig
    from trainer.families import load_model
    from trainer.network.lora import LoraNetwork, NetworkSpec

    family, comp = load_model(TrainConfig(pretrained_model_name_or_path=str(tiny_sd1)))
    network = LoraNetwork.inject(family, comp, NetworkSpec(rank=4, alpha=2.0, conv_rank=2, conv_alpha=1.0))
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in network.trainable_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    lora_path = tmp_path / "lora.safetensors"
    write_lora_file(lora_path, network.to_lora_file({}), save_precision="float")

    merged_path = tmp_path / "merged.safetensors"
    tools("merge", "--sd_model", str(tiny_sd1), "--models", str(lora_path), "--ratios", "1.0",
          "--save_precision", "float", "--save_to", str(merged_path))
    _, merged = load_model(TrainConfig(pretrained_model_name_or_path=str(merged_path)))

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd1, safety_checker=None, requires_safety_checker=False)
    ids = pipe.tokenizer(["a red disc"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        base_te = pipe.text_encoder(ids)[0]
    pipe.load_lora_weights(str(lora_path))

    latents = torch.randn(1, 4, 8, 8, generator=gen)
    t = torch.tensor([500])
    with torch.no_grad():
        te_ref = pipe.text_encoder(ids)[0]
        te_ours = merged.text_encoders[0](ids)[0]
        unet_ref = pipe.unet(latents, t, encoder_hidden_states=te_ref).sample
        unet_ours = merged.unet(latents, t, encoder_hidden_states=te_ref).sample
    assert not torch.allclose(te_ref, base_te, atol=1e-4)  # the LoRA really changes the model
    assert torch.allclose(te_ours, te_ref, atol=1e-5)
    assert torch.allclose(unet_ours, unet_ref, atol=1e-5)


def test_merge_into_checkpoint_as_diffusers_folder(tiny_sd1, tmp_path):
    base = module_weights(load_base_model(tiny_sd1), conv=True)
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    w = base[name]
    gen = torch.Generator().manual_seed(2)
    module = LoraModule(name, torch.randn(2, w.shape[1], generator=gen), torch.randn(w.shape[0], 2, generator=gen), 2.0)
    lora_path = tmp_path / "one.safetensors"
    write_lora_file(lora_path, LoraFile({name: module}, {}), save_precision="float")
    out = tmp_path / "merged-folder"
    tools("merge", "--sd_model", str(tiny_sd1), "--models", str(lora_path), "--ratios", "0.5",
          "--save_as", "diffusers", "--save_to", str(out))
    assert (out / "model_index.json").is_file() and not any(p.name.startswith(".") for p in tmp_path.iterdir())
    merged = module_weights(load_base_model(out), conv=True)
    assert torch.allclose(merged[name], w + module.delta_weight(0.5), atol=1e-6)
    # an existing folder is never replaced
    proc = subprocess.run([sys.executable, "-m", "trainer.tools", "merge", "--sd_model", str(tiny_sd1), "--models",
                           str(lora_path), "--ratios", "0.5", "--save_as", "diffusers", "--save_to", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 1 and "already exists" in proc.stderr
