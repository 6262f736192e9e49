"""The loss options of issue 13 on real tensors: loss types and the Huber schedule, the timestep weights
(debiased estimation, scale-v-pred, v-pred-like), input-perturbation noise, zero terminal SNR, LoRA+; and a
real run with all of them (and rank / module dropout), whose file records them as sd-scripts does."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import make_run_config
from trainer.config import TrainConfig
from trainer.network.kohya_format import read_lora_file
from trainer.training.loss_terms import SNR_CAP, LossTerms
from trainer.training.noise import NoiseSchedule

EPS, V = NoiseSchedule("epsilon"), NoiseSchedule("v_prediction")


def _terms(schedule: NoiseSchedule = EPS, **options) -> LossTerms:
    return LossTerms(TrainConfig(**options), schedule)


def test_element_losses_follow_sd_scripts_formulas():
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 4, 8, 8, generator=gen), torch.randn(3, 4, 8, 8, generator=gen)
    t = torch.tensor([10, 500, 990])
    d = pred - target
    assert torch.allclose(_terms(loss_type="l2").per_sample(pred, target, t), d.square().mean(dim=(1, 2, 3)))
    assert torch.allclose(_terms(loss_type="l1").per_sample(pred, target, t), d.abs().mean(dim=(1, 2, 3)))
    c = 0.3
    huber = _terms(loss_type="huber", huber_schedule="constant", huber_c=c).per_sample(pred, target, t)
    expected = (2 * c * ((d.square() + c * c).sqrt() - c)).mean(dim=(1, 2, 3))
    assert torch.allclose(huber, expected)
    smooth = _terms(loss_type="smooth_l1", huber_schedule="constant", huber_c=c).per_sample(pred, target, t)
    assert torch.allclose(smooth * c, huber)  # smooth_l1 is huber without the leading c
    # Huber is quadratic for small errors and linear (slope 2c) for large ones
    small, zero = torch.full((1, 1, 1, 1), 1e-3), torch.zeros(1, 1, 1, 1)
    big = torch.full((1, 1, 1, 1), 50.0)
    terms = _terms(loss_type="huber", huber_schedule="constant", huber_c=c)
    assert float(terms.per_sample(small, zero, t[:1])) == pytest.approx(1e-6, rel=1e-2)  # float32 cancellation
    assert float(terms.per_sample(big, zero, t[:1])) == pytest.approx(2 * c * 50 - 2 * c * c, rel=1e-3)


def test_huber_threshold_schedules():
    t = torch.tensor([0, 250, 500, 999])
    constant = _terms(huber_schedule="constant", huber_c=0.1, huber_scale=2.0).huber_c(t)
    assert torch.allclose(constant, torch.full((4,), 0.2))
    exponential = _terms(huber_schedule="exponential", huber_c=0.1, huber_scale=1.0).huber_c(t)
    assert float(exponential[0]) == pytest.approx(1.0) and float(exponential[-1]) == pytest.approx(0.1, rel=0.01)
    snr = _terms(huber_schedule="snr", huber_c=0.1).huber_c(t)
    alpha_bar = EPS.alphas_cumprod[t]
    assert torch.allclose(snr, 0.9 / (1 + ((1 - alpha_bar) / alpha_bar).sqrt()) ** 2 + 0.1)
    assert all(a > b for a, b in zip(snr, snr[1:])) and float(snr[-1]) == pytest.approx(0.1, abs=0.01)


def test_timestep_weights():
    t = torch.tensor([0, 100, 500, 900])
    snr = torch.clamp(EPS.snr[t], max=SNR_CAP)
    assert float(EPS.snr[0]) > SNR_CAP  # the cap matters at t = 0
    ones = torch.ones(4)
    assert torch.allclose(_terms(debiased_estimation_loss=True).apply_weights(ones, t), 1 / snr.sqrt())
    assert torch.allclose(_terms(V, debiased_estimation_loss=True).apply_weights(ones, t), 1 / (snr + 1))
    assert torch.allclose(_terms(V, scale_v_pred_loss_like_noise_pred=True).apply_weights(ones, t), snr / (snr + 1))
    assert torch.equal(_terms(EPS, scale_v_pred_loss_like_noise_pred=True).apply_weights(ones, t), ones)  # v only
    assert torch.allclose(_terms(v_pred_like_loss=0.2).apply_weights(ones, t), 1 + 0.2 * (snr + 1) / snr)
    combined = _terms(min_snr_gamma=5.0, debiased_estimation_loss=True).apply_weights(ones, t)
    assert torch.allclose(combined, EPS.min_snr_weights(t, 5.0) / snr.sqrt())  # in sd-scripts' order
    assert torch.equal(_terms().apply_weights(ones, t), ones)


def test_input_perturbation_noise():
    noise = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    before = gen.get_state()
    assert _terms().input_noise(noise, gen) is None and torch.equal(gen.get_state(), before)  # nothing drawn
    perturbed = _terms(ip_noise_gamma=0.1).input_noise(noise, gen)
    assert float((perturbed - noise).std()) == pytest.approx(0.1, rel=0.15)
    strengths = [float((_terms(ip_noise_gamma=0.1, ip_noise_gamma_random_strength=True)
                        .input_noise(noise, gen) - noise).std()) for _ in range(6)]
    assert all(s < 0.115 for s in strengths) and len({round(s, 4) for s in strengths}) == 6


def test_zero_terminal_snr_schedule():
    config = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
    plain = NoiseSchedule.from_scheduler_config(config)
    zero = NoiseSchedule.from_scheduler_config(config, zero_terminal_snr=True)
    assert float(plain.alphas_cumprod[-1]) > 1e-3
    assert 0 < float(zero.alphas_cumprod[-1]) < 1e-6 and math.isfinite(float(1 / zero.snr[-1].sqrt()))
    assert float(zero.alphas_cumprod[0]) == pytest.approx(float(plain.alphas_cumprod[0]), abs=1e-3)


def test_loraplus_puts_the_up_matrices_in_a_faster_group():
    from test_network import inject

    network, _ = inject("sd1")
    groups = network.param_groups(1e-4, 5e-5, loraplus={"unet": 16.0, "text_encoder": 4.0})
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"textencoder", "textencoder_plus", "unet", "unet_plus"}
    assert by_name["unet_plus"]["lr"] == pytest.approx(16e-4) and by_name["textencoder_plus"]["lr"] == pytest.approx(2e-4)
    ups = {id(m.lora_up.weight) for m in network.loras.values()}
    assert all(id(p) in ups for p in by_name["unet_plus"]["params"] + by_name["textencoder_plus"]["params"])
    assert not any(id(p) in ups for p in by_name["unet"]["params"] + by_name["textencoder"]["params"])
    # one AdamW step moves the UNet's up matrices 16x as far as its down matrices (Adam's first step has
    # the size of the learning rate, whatever the gradient)
    unet = [m for m in network.loras.values() if m.part == "unet"]
    before = {id(p): p.detach().clone() for m in unet for p in (m.lora_down.weight, m.lora_up.weight)}
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    for group in groups:
        for p in group["params"]:
            p.grad = torch.ones_like(p)
    optimizer.step()
    moved_up = max(float((m.lora_up.weight.detach() - before[id(m.lora_up.weight)]).abs().max()) for m in unet)
    moved_down = max(float((m.lora_down.weight.detach() - before[id(m.lora_down.weight)]).abs().max()) for m in unet)
    assert moved_up == pytest.approx(16e-4, rel=1e-3) and moved_down == pytest.approx(1e-4, rel=1e-3)
    plain = {g["name"]: g for g in network.param_groups(1e-4, 5e-5)}
    assert set(plain) == {"textencoder", "unet"}
    assert TrainConfig(loraplus_lr_ratio=8.0, loraplus_unet_lr_ratio=16.0).loraplus_ratio("unet") == 16.0
    assert TrainConfig(loraplus_lr_ratio=8.0).loraplus_ratio("text_encoder") == 8.0


def test_a_run_with_the_loss_options_records_them_and_trains_differently(tmp_path, tiny_sd1):
    from test_engine import make_images, train

    images = make_images(tmp_path / "img", "2_sks disc", 2)
    base = dict(max_train_epochs=1, save_every_n_epochs=0)
    code, plain = train(make_run_config(tmp_path / "a", tiny_sd1, images, **base))
    options = dict(loss_type="huber", huber_schedule="snr", huber_c=0.2, debiased_estimation_loss=True,
                   ip_noise_gamma=0.1, zero_terminal_snr=True, v_pred_like_loss=0.1, loraplus_lr_ratio=16.0,
                   rank_dropout=0.1, module_dropout=0.1)
    cfg = make_run_config(tmp_path / "b", tiny_sd1, images, **base, **options)
    code_b, tuned = train(cfg)
    assert code == 0 and code_b == 0
    plain_losses = [e["loss"] for e in plain if e["type"] == "step"]
    tuned_losses = [e["loss"] for e in tuned if e["type"] == "step"]
    assert len(plain_losses) == len(tuned_losses) == 4 and all(math.isfinite(x) for x in tuned_losses)
    assert all(abs(a - b) > 1e-6 for a, b in zip(plain_losses, tuned_losses))
    meta = read_lora_file(f"{cfg.output_dir}/{cfg.output_name}.safetensors").metadata
    assert meta["ss_loss_type"] == "huber" and meta["ss_huber_schedule"] == "snr" and meta["ss_huber_c"] == "0.2"
    assert meta["ss_debiased_estimation"] == "True" and meta["ss_zero_terminal_snr"] == "True"
    assert meta["ss_ip_noise_gamma"] == "0.1" and meta["ss_v_pred_like_loss"] == "0.1"
    args = json.loads(meta["ss_network_args"])
    assert args["loraplus_lr_ratio"] == "16" and args["rank_dropout"] == "0.1" and args["module_dropout"] == "0.1"


def test_preflight_warns_about_loss_options_that_clash_or_do_nothing(tmp_path, tiny_sd1):
    from test_engine import make_images
    from trainer.validation import validate

    cfg = make_run_config(tmp_path, tiny_sd1, make_images(tmp_path / "img", "2_sks disc", 1))
    assert not {"debiased_with_min_snr", "scale_v_pred_without_v_model"} & {i.code for i in validate(cfg)}
    both = cfg.replace(debiased_estimation_loss=True, min_snr_gamma=5.0, scale_v_pred_loss_like_noise_pred=True)
    found = {i.code: i for i in validate(both)}
    assert found["debiased_with_min_snr"].level == "warning"
    assert found["scale_v_pred_without_v_model"].field == "scale_v_pred_loss_like_noise_pred"
    assert "scale_v_pred_without_v_model" not in {i.code for i in validate(both.replace(v2=True, v_parameterization=True))}
