"""LoRA injection (peft) with kohya semantics, on the tiny SD1/SD2 models.

The decisive check is `test_diffusers_loads_our_file_identically`: a file we write, loaded by diffusers'
own kohya loader into a fresh pipeline, must give the same UNet and text-encoder outputs as our
injected model.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainer.errors import TrainingError
from trainer.network.kohya_format import LoraFile, LoraModule, read_lora_file, write_lora_file
from trainer.network.lora import LoraNetwork, NetworkSpec
from trainer.tiny import build_tiny_pipeline

RANK, ALPHA, CONV_RANK, CONV_ALPHA = 4, 2.0, 3, 6.0  # rank != alpha on purpose

# Tiny SD layouts (trainer.tiny): attention blocks and resnets per UNet block.
TRANSFORMERS = ["down_blocks.0.attentions.0", "down_blocks.0.attentions.1", "mid_block.attentions.0",
                "up_blocks.1.attentions.0", "up_blocks.1.attentions.1", "up_blocks.1.attentions.2"]
TRANSFORMER_LAYERS = ["proj_in", "proj_out"] + [
    f"transformer_blocks.0.{a}.{m}" for a in ("attn1", "attn2") for m in ("to_q", "to_k", "to_v", "to_out.0")
] + ["transformer_blocks.0.ff.net.0.proj", "transformer_blocks.0.ff.net.2"]
RESNETS = [f"down_blocks.{b}.resnets.{i}" for b in (0, 1) for i in (0, 1)] + \
    [f"up_blocks.{b}.resnets.{i}" for b in (0, 1) for i in (0, 1, 2)] + [f"mid_block.resnets.{i}" for i in (0, 1)]
WITH_SHORTCUT = {"down_blocks.1.resnets.0", *(f"up_blocks.{b}.resnets.{i}" for b in (0, 1) for i in (0, 1, 2))}
SAMPLERS = ["down_blocks.0.downsamplers.0.conv", "up_blocks.0.upsamplers.0.conv"]
TE_LAYERS = [f"encoder.layers.{i}.{m}" for i in range(5) for m in (
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")]


def unet_name(path: str) -> str:
    return "lora_unet_" + path.replace(".", "_")


def te_name(path: str) -> str:
    return "lora_te_text_model_" + path.replace(".", "_")


def family_and_components(name: str):
    """(the real family, components, pipeline) for a fresh tiny pipeline of `name`."""
    from trainer.families import get_family
    from trainer.families.base import Components
    from trainer.families.detect import ModelInfo

    pipe = build_tiny_pipeline(name)
    info = ModelInfo(family=name, v2=name.startswith("sd2"), v_parameterization=False, kind="diffusers", path="")
    comp = Components(unet=pipe.unet, vae=pipe.vae, text_encoders=[pipe.text_encoder], tokenizers=[pipe.tokenizer],
                      scheduler_config=dict(pipe.scheduler.config), info=info)
    return get_family(info), comp, pipe


def inject(name: str, *, conv: bool = False, dropout: float = 0.0, rank_dropout: float = 0.0,
           module_dropout: float = 0.0, **kwargs):
    family, comp, pipe = family_and_components(name)
    spec = NetworkSpec(rank=RANK, alpha=ALPHA, conv_rank=CONV_RANK if conv else 0, conv_alpha=CONV_ALPHA,
                       dropout=dropout, rank_dropout=rank_dropout, module_dropout=module_dropout)
    return LoraNetwork.inject(family, comp, spec, **kwargs), pipe


def randomize(network: LoraNetwork, seed: int = 1, std: float = 0.2) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in network.loras.values():
            for p in (m.lora_down.weight, m.lora_up.weight):
                p.copy_(torch.randn(p.shape, generator=gen) * std)


def model_inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 4, 8, 8, generator=gen), torch.tensor([10, 500]),
            torch.randint(0, 49406, (2, 77), generator=gen))


@torch.no_grad()
def outputs(pipe, inputs):
    latents, timesteps, ids = inputs
    hidden = pipe.text_encoder(ids).last_hidden_state
    return hidden, pipe.unet(latents, timesteps, encoder_hidden_states=hidden).sample


# ---- 1. key set, shapes, alphas -------------------------------------------------------------------
@pytest.mark.parametrize("family", ["sd1", "sd2"])
def test_standard_key_set_and_shapes(family):
    network, _ = inject(family)
    state = network.to_lora_file().state_dict()
    expected = {unet_name(f"{t}.{layer}") for t in TRANSFORMERS for layer in TRANSFORMER_LAYERS}
    expected |= {te_name(p) for p in TE_LAYERS}
    assert len(expected) == 72 + 30
    assert set(network.loras) == expected
    assert set(state) == {f"{n}.{s}" for n in expected for s in ("lora_down.weight", "lora_up.weight", "alpha")}

    for name in ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
                 "lora_unet_up_blocks_1_attentions_2_transformer_blocks_0_ff_net_0_proj",
                 "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_out_0",
                 "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
                 "lora_te_text_model_encoder_layers_4_mlp_fc2"):
        assert name in network.loras

    proj_in = "lora_unet_down_blocks_0_attentions_0_proj_in"
    # SD1 projects with a 1x1 conv, SD2 with a Linear.
    assert state[f"{proj_in}.lora_down.weight"].shape == ((RANK, 32, 1, 1) if family == "sd1" else (RANK, 32))
    assert state[f"{proj_in}.lora_up.weight"].shape == ((32, RANK, 1, 1) if family == "sd1" else (32, RANK))
    to_k2 = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    assert state[f"{to_k2}.lora_down.weight"].shape == (RANK, 32)  # cross_attention_dim
    ff = "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_ff_net_0_proj"
    assert state[f"{ff}.lora_up.weight"].shape == (256, RANK)  # GEGLU: 2 x 4 x 32
    fc1 = "lora_te_text_model_encoder_layers_0_mlp_fc1"
    assert state[f"{fc1}.lora_down.weight"].shape == (RANK, 32)
    assert state[f"{fc1}.lora_up.weight"].shape == (37, RANK)
    for name in expected:
        alpha = state[f"{name}.alpha"]
        assert alpha.dim() == 0 and alpha.item() == ALPHA


def test_locon_adds_resnet_and_sampler_convs():
    network, _ = inject("sd1", conv=True)
    state = network.to_lora_file().state_dict()
    conv_paths = [f"{r}.{c}" for r in RESNETS for c in ("conv1", "conv2")] + SAMPLERS
    linear_like = [f"{r}.time_emb_proj" for r in RESNETS] + [f"{r}.conv_shortcut" for r in sorted(WITH_SHORTCUT)]
    expected_extra = {unet_name(p) for p in conv_paths + linear_like}
    standard = {unet_name(f"{t}.{layer}") for t in TRANSFORMERS for layer in TRANSFORMER_LAYERS}
    assert set(m.name for m in network.modules_of("unet")) == standard | expected_extra
    assert len(expected_extra) == 12 * 3 + 7 + 2

    conv1 = unet_name("down_blocks.1.resnets.0.conv1")
    assert state[f"{conv1}.lora_down.weight"].shape == (CONV_RANK, 32, 3, 3)
    assert state[f"{conv1}.lora_up.weight"].shape == (64, CONV_RANK, 1, 1)
    assert state[f"{conv1}.alpha"].item() == CONV_ALPHA
    down = unet_name("down_blocks.0.downsamplers.0.conv")
    assert state[f"{down}.lora_down.weight"].shape == (CONV_RANK, 32, 3, 3)
    assert network.loras[down].lora_down.stride == (2, 2)  # same stride as the base conv, as kohya
    shortcut = unet_name("down_blocks.1.resnets.0.conv_shortcut")
    assert state[f"{shortcut}.lora_down.weight"].shape == (RANK, 32, 1, 1)
    assert state[f"{shortcut}.alpha"].item() == ALPHA
    temb = unet_name("mid_block.resnets.1.time_emb_proj")
    assert state[f"{temb}.lora_down.weight"].shape == (RANK, 128)
    assert state[f"{temb}.alpha"].item() == ALPHA


@pytest.mark.parametrize("v2", [False, True])
def test_full_size_layouts_give_sd_scripts_module_counts(v2):
    """SD1.5 / SD2.x shapes on the meta device (no memory): sd-scripts makes 192 UNet + 72 TE modules,
    and with conv_dim 86 more (50 of them 3x3: conv1/conv2 of 22 resnets and 6 samplers)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from trainer.network.targets import find_lora_targets

    with torch.device("meta"):
        unet = UNet2DConditionModel(cross_attention_dim=1024 if v2 else 768, use_linear_projection=v2,
                                    attention_head_dim=(5, 10, 20, 20) if v2 else 8)
        te = CLIPTextModel(CLIPTextConfig(hidden_size=1024 if v2 else 768, intermediate_size=4096 if v2 else 3072,
                                          num_attention_heads=16 if v2 else 12, num_hidden_layers=23 if v2 else 12))
    assert len(find_lora_targets(unet, "unet")) == 192
    locon = find_lora_targets(unet, "unet", conv=True)
    assert (len(locon), sum(t.conv_rank for t in locon)) == (278, 50)
    assert len(find_lora_targets(te, "text_encoder")) == (23 if v2 else 12) * 6


def test_to_moves_only_lora_weights():
    network, pipe = inject("sd1")
    network.to(dtype=torch.float64)
    assert {p.dtype for p in network.parameters()} == {torch.float64}
    assert {p.dtype for n, p in pipe.unet.named_parameters() if "lora_" not in n} == {torch.float32}
    with torch.no_grad():
        outputs(pipe, model_inputs())  # peft casts the input to the LoRA dtype and the result back


def test_init_is_kaiming_down_and_zero_up():
    network, pipe = inject("sd1")
    base = build_tiny_pipeline("sd1")
    inputs = model_inputs()
    for m in network.loras.values():
        down = m.lora_down.weight
        bound = 1 / (down[0].numel() ** 0.5)  # kaiming_uniform(a=sqrt(5)) on fan_in
        assert down.abs().max() <= bound and down.abs().max() > 0.5 * bound
        assert torch.count_nonzero(m.lora_up.weight) == 0
        assert m.lora_down.weight.dtype == torch.float32 and m.lora_down.weight.requires_grad
    for a, b in zip(outputs(pipe, inputs), outputs(base, inputs)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # a fresh LoRA changes nothing


# ---- 2. equivalence with diffusers' loader --------------------------------------------------------
@pytest.mark.parametrize("family,conv,precision", [("sd1", False, "float"), ("sd2", False, "float"),
                                                   ("sd1", True, "float"), ("sd2", True, "float"),
                                                   ("sd1", True, "fp16")])
def test_diffusers_loads_our_file_identically(tmp_path, family, conv, precision):
    network, pipe = inject(family, conv=conv)
    randomize(network)
    if precision == "fp16":  # the default save precision: compare with the weights the file holds
        with torch.no_grad():
            for p in network.parameters():
                p.copy_(p.half().float())
    network.eval()
    inputs = model_inputs()
    ours = outputs(pipe, inputs)

    path = tmp_path / "lora.safetensors"
    write_lora_file(path, network.to_lora_file({"ss_network_dim": str(RANK)}), save_precision=precision)
    reference = build_tiny_pipeline(family)
    base = outputs(reference, inputs)
    reference.load_lora_weights(str(path))
    theirs = outputs(reference, inputs)

    for label, a, b, b0 in zip(("text encoder", "unet"), ours, theirs, base):
        assert (a - b0).abs().max() > 1e-2, f"{label}: the LoRA has no visible effect"
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5, msg=lambda m: f"{label}: {m}")


# ---- 3. round trip through a file, continue training from it --------------------------------------
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_round_trip_into_a_fresh_network(tmp_path, suffix):
    network, _ = inject("sd1", conv=True)
    randomize(network, seed=3)
    path = tmp_path / f"lora{suffix}"
    write_lora_file(path, network.to_lora_file({"ss_x": "1"}), save_precision="float")

    fresh, _ = inject("sd1", conv=True)
    report = fresh.load_lora_file(read_lora_file(path))
    assert sorted(report.loaded) == sorted(network.loras) and not report.missing and not report.unexpected
    for name, m in network.loras.items():
        torch.testing.assert_close(fresh.loras[name].lora_down.weight, m.lora_down.weight, rtol=0, atol=0)
        torch.testing.assert_close(fresh.loras[name].lora_up.weight, m.lora_up.weight, rtol=0, atol=0)
        assert fresh.loras[name].alpha == m.alpha


def test_load_adopts_file_alpha_and_reports_other_modules():
    network, pipe = inject("sd1")
    q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    lf = network.to_lora_file()
    lf.modules[q] = LoraModule(q, torch.randn(RANK, 32), torch.randn(32, RANK), alpha=8.0)
    lf.modules["lora_unet_not_a_module"] = LoraModule("lora_unet_not_a_module", torch.zeros(2, 3), torch.zeros(3, 2))
    del lf.modules["lora_te_text_model_encoder_layers_0_mlp_fc1"]
    report = network.load_lora_file(lf)
    assert report.unexpected == ["lora_unet_not_a_module"]
    assert report.missing == ["lora_te_text_model_encoder_layers_0_mlp_fc1"]
    assert network.loras[q].alpha == 8.0
    layer = pipe.unet.get_submodule("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q")
    assert layer.scaling["default"] == pytest.approx(8.0 / RANK)
    assert "1 missing" in str(report)


def test_load_accepts_peft_names_and_rejects_other_ranks():
    network, _ = inject("sd1")
    q_path = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    down, up = torch.randn(RANK, 32), torch.randn(32, RANK)
    lf = LoraFile.from_state_dict({f"unet.{q_path}.lora_A.weight": down, f"unet.{q_path}.lora_B.weight": up,
                                   "text_encoder.encoder.layers.1.mlp.fc2.lora_A.weight": torch.randn(RANK, 37),
                                   "text_encoder.encoder.layers.1.mlp.fc2.lora_B.weight": torch.randn(32, RANK)})
    report = network.load_lora_file(lf)
    assert sorted(report.loaded) == [te_name("encoder.layers.1.mlp.fc2"), unet_name(q_path)]
    torch.testing.assert_close(network.loras[unet_name(q_path)].lora_down.weight, down)
    assert network.loras[unet_name(q_path)].alpha == RANK  # peft file without alpha: scale 1

    wrong = LoraFile({unet_name(q_path): LoraModule(unet_name(q_path), torch.randn(8, 32), torch.randn(32, 8))})
    with pytest.raises(TrainingError) as exc:
        network.load_lora_file(wrong)
    assert exc.value.code == "network_weights_mismatch" and exc.value.field == "network_weights"


def test_trainable_state_round_trip():
    network, _ = inject("sd2", conv=True)
    randomize(network, seed=5)
    state = network.trainable_state()
    fresh, _ = inject("sd2", conv=True)
    fresh.load_trainable_state(state)
    for name, m in network.loras.items():
        torch.testing.assert_close(fresh.loras[name].lora_up.weight, m.lora_up.weight, rtol=0, atol=0)
    partial = {k: v for k, v in state.items() if "lora_te_" not in k}
    with pytest.raises(TrainingError):
        inject("sd2", conv=True)[0].load_trainable_state(partial)


# ---- 4. learning-rate groups and parts -----------------------------------------------------------
def test_text_encoder_at_lr_zero_is_neither_trained_nor_saved(tmp_path):
    network, _ = inject("sd1")
    groups = network.param_groups(unet_lr=1e-4, text_encoder_lr=0.0)
    assert [(g["name"], g["lr"]) for g in groups] == [("unet", 1e-4)]
    assert len(groups[0]["params"]) == 2 * 72
    assert all(not p.requires_grad for m in network.modules_of("text_encoder") for p in m.parameters())
    assert {id(p) for p in network.trainable_parameters()} == {id(p) for p in groups[0]["params"]}
    path = tmp_path / "unet_only.safetensors"
    write_lora_file(path, network.to_lora_file({}))
    keys = read_lora_file(path).modules
    assert keys and not any(k.startswith("lora_te") for k in keys)

    both = network.param_groups(unet_lr=1e-4, text_encoder_lr=5e-5)
    assert [(g["name"], g["lr"]) for g in both] == [("textencoder", 5e-5), ("unet", 1e-4)]


def test_part_not_trained_is_not_injected():
    network, pipe = inject("sd1", train_text_encoder=False)
    assert network.modules_of("text_encoder") == []
    assert type(pipe.text_encoder.encoder.layers[0].self_attn.q_proj) is nn.Linear
    assert len(network.modules_of("unet")) == 72
    assert [g["name"] for g in network.param_groups(1e-4, 1e-4)] == ["unet"]


# ---- 5. dropout, multiplier, max norm ------------------------------------------------------------
def test_rank_dropout_drops_whole_ranks_per_sample_and_module_dropout_skips_the_module():
    p = 0.5
    network, pipe = inject("sd1", conv=True, rank_dropout=p)
    randomize(network)
    path = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    layer, m = pipe.unet.get_submodule(path), network.loras[unet_name(path)]
    x = torch.randn(6, 16, 32)
    network.train()
    with torch.no_grad():
        down = m.lora_down(x)  # (6, 16, r): the hook keeps or drops each rank for a whole sample
    clean = x @ m.lora_down.weight.T
    dropped = (down == 0).all(dim=1)  # (6, r): a rank is dropped for every token of the sample or for none
    assert torch.equal(dropped, (down == 0).any(dim=1))
    assert 0.2 < dropped.float().mean() < 0.8 and len({tuple(r) for r in dropped.tolist()}) > 1  # differs per sample
    kept = ~dropped.unsqueeze(1).expand_as(down)
    torch.testing.assert_close(down[kept], clean[kept] / (1 - p))  # the kept ranks are rescaled
    conv_name = [n for n in network.loras if "resnets_0_conv1" in n][0]
    conv = network.loras[conv_name]
    with torch.no_grad():
        out = conv.lora_down(torch.randn(3, conv.lora_down.in_channels, 8, 8))  # (3, r, 8, 8)
    per_rank = (out == 0).flatten(2).all(dim=2)
    assert torch.equal(per_rank, (out == 0).flatten(2).any(dim=2)) and per_rank.any()  # whole maps per rank
    network.eval()
    with torch.no_grad():
        torch.testing.assert_close(m.lora_down(x), clean)  # only while training

    skipped, pipe = inject("sd1", module_dropout=1.0)
    randomize(skipped)
    layer, m = pipe.unet.get_submodule(path), skipped.loras[unet_name(path)]
    skipped.train()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), layer.base_layer(x))  # p = 1: the LoRA never adds anything
        skipped.eval()
        assert not torch.allclose(layer(x), layer.base_layer(x))
        torch.testing.assert_close(layer(x), layer.base_layer(x) + m.lora_up(m.lora_down(x)) * m.scale)
    half, pipe = inject("sd1", module_dropout=0.5)
    randomize(half)
    layer = pipe.unet.get_submodule(path)
    half.train()
    with torch.no_grad():
        base = layer.base_layer(x)
        skipped_passes = sum(torch.allclose(layer(x), base) for _ in range(40))
    assert 8 < skipped_passes < 32  # about half of the forward passes


def test_network_dropout_acts_on_the_down_output():
    p = 0.5
    network, pipe = inject("sd1", dropout=p)
    randomize(network)
    layer = pipe.unet.get_submodule("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q")
    m = network.loras[unet_name("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q")]
    assert isinstance(layer.lora_dropout["default"], nn.Identity)  # peft's input dropout stays off
    x = torch.randn(2, 16, 32)
    seen = {}
    handle = m.lora_up.register_forward_pre_hook(lambda mod, args: seen.setdefault("up_input", args[0]))

    network.train()
    torch.manual_seed(7)
    with torch.no_grad():
        y = layer(x)
        torch.manual_seed(7)
        down = m.lora_down(x)  # the hook drops here too, with the same random numbers
        torch.manual_seed(7)
        expected = layer.base_layer(x) + m.lora_up(F.dropout(x @ m.lora_down.weight.T, p, True)) * m.scale
    handle.remove()
    torch.testing.assert_close(y, expected)
    up_in, clean = seen["up_input"], x @ m.lora_down.weight.T
    dropped = up_in == 0
    assert 0.3 < dropped.float().mean() < 0.7  # whole rank activations are zeroed ...
    torch.testing.assert_close(up_in[~dropped], clean[~dropped] / (1 - p))  # ... the rest rescaled
    torch.testing.assert_close(down, up_in)

    network.eval()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), layer.base_layer(x) + m.lora_up(m.lora_down(x)) * m.scale)


def test_multiplier_scales_the_update():
    network, pipe = inject("sd2")
    randomize(network)
    layer = pipe.unet.get_submodule("mid_block.attentions.0.proj_in")
    x = torch.randn(3, 64)  # mid block: 64 channels
    with torch.no_grad():
        base = layer.base_layer(x)
        full = layer(x) - base
        network.set_multiplier(0.5)
        torch.testing.assert_close(layer(x) - base, 0.5 * full)
        network.set_multiplier(0.0)
        torch.testing.assert_close(layer(x), base)
        network.set_multiplier(1.0)
        torch.testing.assert_close(layer(x) - base, full)
        delta = network.loras[unet_name("mid_block.attentions.0.proj_in")].to_lora_module().delta_weight()
        torch.testing.assert_close(full, x @ delta.T)


def test_max_norm_scaling():
    network, _ = inject("sd1", conv=True, train_text_encoder=False)
    randomize(network, std=0.3)
    before = {n: m.to_lora_module() for n, m in network.loras.items()}
    norms = {n: float(lm.delta_weight().norm()) for n, lm in before.items()}
    max_norm = sorted(norms.values())[len(norms) // 2]  # about half the modules exceed it
    over = {n for n, v in norms.items() if v > max_norm}

    keys_scaled, mean_norm, max_after = network.apply_max_norm(max_norm)

    assert keys_scaled == len(over) > 0
    after = {n: m.to_lora_module() for n, m in network.loras.items()}
    for n in norms:
        factor = (max_norm / norms[n]) ** 0.5 if n in over else 1.0
        torch.testing.assert_close(after[n].down, before[n].down * factor)
        torch.testing.assert_close(after[n].up, before[n].up * factor)
    new_norms = [float(lm.delta_weight().norm()) for lm in after.values()]
    assert max(new_norms) <= max_norm * (1 + 1e-5)
    assert mean_norm == pytest.approx(sum(new_norms) / len(new_norms), rel=1e-5)
    assert max_after == pytest.approx(max(new_norms), rel=1e-5)
