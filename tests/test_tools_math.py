"""LoRA toolbox math: resize, merge, svd_merge, extract (library level, small random LoRAs)."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.network.kohya_format import LoraFile, LoraModule
from trainer.tools.errors import ToolError
from trainer.tools.extract import extract_lora
from trainer.tools.factors import ModuleShape
from trainer.tools.lowrank import select_rank, upper_quantile
from trainer.tools.merge import merge_loras, svd_merge_loras
from trainer.tools.resize import resize_lora
from trainer.tools.synthetic import random_lora

SHAPES = {
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj": ModuleShape(32, 32),
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k": ModuleShape(48, 40),
    "lora_unet_down_blocks_0_attentions_0_proj_in": ModuleShape(32, 24, (1, 1)),
    "lora_unet_down_blocks_0_resnets_0_conv1": ModuleShape(16, 12, (3, 3)),
}


def lora_a(seed: int = 0) -> LoraFile:
    return random_lora(SHAPES, rank=8, alpha=4.0, conv_rank=5, conv_alpha=2.5, seed=seed)


def delta(module: LoraModule) -> torch.Tensor:
    """Effective ΔW in float64 (the reference computation: kohya_format's own delta)."""
    return module.delta_weight().double()


def flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def svals(t: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(flat(t.double()))


def truncated(t: torch.Tensor, k: int) -> torch.Tensor:
    P, S, Qh = torch.linalg.svd(flat(t.double()), full_matrices=False)
    return ((P[:, :k] * S[:k]) @ Qh[:k]).reshape(t.shape)


# ---------------------------------------------------------------- rank selection


def test_select_rank_semantics():
    s = [4.0, 2.0, 1.0, 0.5]
    assert select_rank(s, 10) == 4  # fixed rank, capped by the spectrum length
    assert select_rank(s, 2) == 2
    # sv_ratio: keep σ with σ0/σ ≤ p
    assert select_rank(s, 10, "sv_ratio", 4.0) == 3
    assert select_rank(s, 10, "sv_ratio", 1.0) == 1
    assert select_rank(s, 2, "sv_ratio", 100.0) == 2  # the cap wins
    # sv_cumulative: smallest k with Σσ[:k]/Σσ ≥ p; cumulative = .533, .8, .933, 1
    assert select_rank(s, 10, "sv_cumulative", 0.8) == 2  # sd-scripts would keep 3
    assert select_rank(s, 10, "sv_cumulative", 0.81) == 3
    assert select_rank(s, 10, "sv_cumulative", 1.0) == 4
    # sv_fro: smallest k with ‖σ[:k]‖/‖σ‖ ≥ p; ‖σ‖² = 21.25, retained² = 16, 20, 21, 21.25
    assert select_rank(s, 10, "sv_fro", math.sqrt(20 / 21.25)) == 2
    assert select_rank(s, 10, "sv_fro", math.sqrt(20 / 21.25) + 1e-6) == 3
    assert select_rank(s, 10, "sv_fro", 0.5) == 1
    assert select_rank([0.0, 0.0], 4, "sv_fro", 0.9) == 1


def test_upper_quantile_matches_torch_quantile():
    gen = torch.Generator().manual_seed(0)
    for n in (1, 2, 7, 1000, 4097):
        values = torch.randn(3, n, generator=gen, dtype=torch.float64)
        for q in (0.5, 0.9, 0.99, 0.999, 1.0):
            assert torch.allclose(upper_quantile(values, q), torch.quantile(values, q, dim=-1))


# ---------------------------------------------------------------- resize


def test_resize_to_full_rank_reproduces_delta():
    lora = lora_a()
    threads = torch.get_num_threads()
    out, report = resize_lora(lora, 64)
    assert torch.get_num_threads() == threads  # the single-thread section restores the setting
    for name, module in lora.modules.items():
        new = out.modules[name]
        assert new.rank == module.rank
        assert new.scale == pytest.approx(module.scale)
        assert new.down.shape[1:] == module.down.shape[1:] and new.up.shape[2:] == module.up.shape[2:]
        assert (delta(new) - delta(module)).abs().max() < 1e-5
    assert all(m.rel_error < 1e-6 for m in report.modules)


def test_fixed_rank_resize_is_best_rank_k_approximation():
    lora = lora_a()
    out, report = resize_lora(lora, 3, new_conv_rank=2)
    for name, module in lora.modules.items():
        k = 2 if SHAPES[name].is_spatial else 3  # the 1×1 conv follows new_rank, not new_conv_rank
        new = out.modules[name]
        assert new.rank == k
        assert new.scale == pytest.approx(module.scale)  # alpha/rank preserved: alpha = scale·k
        assert (delta(new) - truncated(delta(module), k)).abs().max() < 1e-6
    assert out.metadata["ss_network_dim"] == "3"
    assert out.metadata["ss_network_alpha"] == "1.5"  # scale 4/8 kept: alpha = 0.5 · 3
    assert '"conv_dim": "2"' in out.metadata["ss_network_args"]
    assert out.metadata["ss_training_comment"].startswith("dimension is resized from 8 to 3 (conv: 2)")
    assert {m.rank for m in report.modules} == {2, 3}


@pytest.mark.parametrize("p", [0.5, 0.8, 0.95, 0.999])
def test_sv_fro_keeps_p_with_smallest_rank(p):
    lora = lora_a()
    out, report = resize_lora(lora, 64, dynamic_method="sv_fro", dynamic_param=p)
    for name, module in lora.modules.items():
        s = svals(delta(module))
        s = s[: module.rank]
        retained = torch.sqrt(torch.cumsum(s**2, 0) / (s**2).sum())
        k = out.modules[name].rank
        assert retained[k - 1] >= p - 1e-9
        assert k == 1 or retained[k - 2] < p  # no smaller rank reaches p
        # ... and the written module really holds that much of the norm
        kept = torch.linalg.matrix_norm(flat(delta(out.modules[name]))) / torch.linalg.matrix_norm(flat(delta(module)))
        assert kept >= p - 1e-6
    linear_ranks = {out.modules[n].rank for n, sh in SHAPES.items() if not sh.is_spatial}
    assert out.metadata["ss_network_dim"] == (str(linear_ranks.pop()) if len(linear_ranks) == 1 else "Dynamic")
    assert out.metadata["ss_training_comment"].startswith(f"Dynamic resize with sv_fro: {p} from 8")


def test_sv_ratio_and_sv_cumulative_semantics():
    lora = lora_a()
    ratio_out, _ = resize_lora(lora, 64, dynamic_method="sv_ratio", dynamic_param=2.0)
    cum_out, _ = resize_lora(lora, 64, dynamic_method="sv_cumulative", dynamic_param=0.7)
    for name, module in lora.modules.items():
        s = svals(delta(module))[: module.rank]
        k = ratio_out.modules[name].rank
        assert s[0] / s[k - 1] <= 2.0 + 1e-9
        assert k == module.rank or s[0] / s[k] > 2.0
        k = cum_out.modules[name].rank
        c = torch.cumsum(s, 0) / s.sum()
        assert c[k - 1] >= 0.7 - 1e-9 and (k == 1 or c[k - 2] < 0.7)


def test_dynamic_resize_respects_the_rank_caps():
    out, report = resize_lora(lora_a(), 2, new_conv_rank=1, dynamic_method="sv_fro", dynamic_param=0.9999)
    for name, module in out.modules.items():
        assert module.rank <= (1 if SHAPES[name].is_spatial else 2)
    assert any("reached the rank cap" in w for w in report.warnings)
    _, report = resize_lora(lora_a(), 8, dynamic_method="sv_fro", dynamic_param=0.5)
    assert not report.warnings


def test_resize_zero_module_and_bad_options():
    lora = lora_a()
    name = "lora_unet_down_blocks_0_attentions_0_proj_in"
    m = lora.modules[name]
    lora.modules[name] = LoraModule(name, m.down, torch.zeros_like(m.up), m.alpha)
    out, report = resize_lora(lora, 4, dynamic_method="sv_fro", dynamic_param=0.9)
    assert out.modules[name].rank == 1 and not out.modules[name].up.any()
    assert next(c for c in report.modules if c.name == name).note
    with pytest.raises(ToolError):
        resize_lora(lora, 4, dynamic_method="sv_fro", dynamic_param=1.5)
    with pytest.raises(ToolError):
        resize_lora(lora, 4, dynamic_method="sv_ratio")
    with pytest.raises(ToolError):
        resize_lora(lora, 0)
    if not torch.cuda.is_available():
        with pytest.raises(ToolError, match="CUDA is not available"):
            resize_lora(lora, 4, device="cuda")


# ---------------------------------------------------------------- merges


def test_concat_merge_is_the_exact_weighted_sum():
    a, b = lora_a(0), lora_a(1)
    only_b = "lora_unet_up_blocks_1_attentions_0_proj_out"
    b.modules[only_b] = LoraModule(only_b, torch.randn(3, 20), torch.randn(10, 3), 1.5)
    out, report = merge_loras([a, b], [0.7, -1.3], titles=["a", "b"], title="ab")
    for name in SHAPES:
        expected = 0.7 * delta(a.modules[name]) - 1.3 * delta(b.modules[name])
        new = out.modules[name]
        assert new.rank == a.modules[name].rank + b.modules[name].rank and new.scale == 1.0
        assert (delta(new) - expected).abs().max() < 1e-6
    assert (delta(out.modules[only_b]) + 1.3 * delta(b.modules[only_b])).abs().max() < 1e-5
    assert out.metadata["modelspec.merged_from"] == "a, b"
    assert out.metadata["modelspec.title"] == "ab"
    assert out.metadata["ss_network_dim"] == "Dynamic"  # 16 for shared modules, 3 for the extra one


def test_merge_checks_inputs():
    a = lora_a()
    with pytest.raises(ToolError):
        merge_loras([a, a], [1.0])
    bad = lora_a()
    name = "lora_unet_down_blocks_0_attentions_0_proj_in"
    bad.modules[name] = LoraModule(name, torch.randn(4, 25, 1, 1), torch.randn(32, 4, 1, 1), 4.0)
    with pytest.raises(ToolError, match="different base models"):
        merge_loras([a, bad], [1.0, 1.0])


def test_svd_merge_of_lora_and_its_negative_is_zero():
    a = lora_a()
    out, report = svd_merge_loras([a, a], [1.0, -1.0], 4)
    for module in out.modules.values():
        assert delta(module).abs().max() < 1e-9


def test_svd_merge_is_best_rank_k_of_the_sum():
    a, b = lora_a(0), lora_a(1)
    out, report = svd_merge_loras([a, b], [0.5, 2.0], 3, new_conv_rank=2, clamp_quantile=1.0)
    for name in SHAPES:
        k = 2 if SHAPES[name].is_spatial else 3
        total = 0.5 * delta(a.modules[name]) + 2.0 * delta(b.modules[name])
        new = out.modules[name]
        assert new.rank == k and new.scale == 1.0
        assert (delta(new) - truncated(total, k)).abs().max() < 1e-6
    # a single LoRA at its own rank comes back unchanged
    same, _ = svd_merge_loras([a], [1.0], 8, new_conv_rank=5, clamp_quantile=None)
    for name in SHAPES:
        assert (delta(same.modules[name]) - delta(a.modules[name])).abs().max() < 1e-6


def test_svd_merge_clamp_limits_factor_values():
    a = lora_a()
    out, report = svd_merge_loras([a], [1.0], 4, clamp_quantile=0.9)
    free, _ = svd_merge_loras([a], [1.0], 4, clamp_quantile=None)
    for name, module in out.modules.items():
        up, down = free.modules[name].up, free.modules[name].down
        h = torch.quantile(torch.cat([up.flatten(), down.flatten()]), 0.9)  # sd-scripts: signed values
        assert torch.allclose(module.up, up.clamp(-h, h), atol=1e-7)
        assert torch.allclose(module.down, down.clamp(-h, h), atol=1e-7)
    assert all(c.rel_error is not None and c.rel_error > 0 for c in report.modules)


# ---------------------------------------------------------------- extract


def _known_delta(shape: ModuleShape, rank: int, gen: torch.Generator) -> torch.Tensor:
    d = torch.randn(shape.out_features, rank, generator=gen) @ torch.randn(rank, shape.flat_in, generator=gen)
    return (0.01 * d).reshape(shape.weight_shape())


def test_extract_recovers_a_known_low_rank_delta():
    gen = torch.Generator().manual_seed(3)
    shapes = dict(SHAPES)
    shapes["lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_2"] = ModuleShape(96, 160)  # randomised path
    org = {n: torch.randn(s.weight_shape(), generator=gen) for n, s in shapes.items()}
    known = {n: _known_delta(s, 3, gen) for n, s in shapes.items()}
    tuned = {n: org[n] + known[n] for n in shapes}
    out, report = extract_lora(org, tuned, 3, conv_dim=3, clamp_quantile=1.0)
    assert set(out.modules) == set(shapes)
    for name in shapes:
        module = out.modules[name]
        assert module.rank == 3 and module.scale == 1.0
        assert module.delta_weight().shape == known[name].shape
        assert (module.delta_weight() - known[name]).abs().max() < 1e-4
    assert all(c.rel_error < 1e-4 for c in report.modules)


def test_extract_rules_for_text_encoder_and_convs():
    gen = torch.Generator().manual_seed(4)
    org = {n: torch.randn(s.weight_shape(), generator=gen) for n, s in SHAPES.items()}
    tuned = {n: w.clone() for n, w in org.items()}
    for n, s in SHAPES.items():
        if n.startswith("lora_unet"):
            tuned[n] += _known_delta(s, 2, gen)
    tuned["lora_te_text_model_encoder_layers_0_self_attn_q_proj"] += 0.001  # below min_diff
    out, report = extract_lora(org, tuned, 4)  # no conv_dim: the 3×3 conv is skipped
    assert set(out.modules) == {
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k",
        "lora_unet_down_blocks_0_attentions_0_proj_in",
    }
    assert any("text encoder is the same" in w for w in report.warnings)
    assert any("conv1" in s for s in report.skipped)
    assert out.metadata["ss_network_dim"] == "4" and out.metadata["ss_network_alpha"] == "4.0"


def test_randomised_extract_is_close_to_the_exact_one():
    gen = torch.Generator().manual_seed(5)
    # a full-rank delta with a decaying spectrum, large enough for the randomised path
    P, _ = torch.linalg.qr(torch.randn(120, 120, generator=gen))
    Q, _ = torch.linalg.qr(torch.randn(200, 120, generator=gen))
    W = (P * torch.tensor([0.9**i for i in range(120)])) @ Q.T
    org = {"lora_unet_x": torch.zeros(120, 200)}
    tuned = {"lora_unet_x": W}
    _, fast = extract_lora(org, tuned, 8, clamp_quantile=1.0)
    _, exact = extract_lora(org, tuned, 8, clamp_quantile=1.0, exact_svd=True)
    assert fast.modules[0].rel_error <= exact.modules[0].rel_error * 1.001
