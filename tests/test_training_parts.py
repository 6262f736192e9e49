import math

import pytest
import torch

from trainer.errors import TrainingError
from trainer.training.noise import NoiseSchedule, alphas_cumprod, make_noise, sample_timesteps
from trainer.training.optimizers import OPTIMIZER_FACTORIES, build_optimizer, parse_optimizer_args
from trainer.training.schedulers import build_lr_scheduler, warmup_steps


def test_parse_optimizer_args():
    assert parse_optimizer_args("weight_decay=0.01 betas=0.9,0.99 foo=True") == {
        "weight_decay": 0.01, "betas": (0.9, 0.99), "foo": True}
    with pytest.raises(TrainingError) as exc:
        parse_optimizer_args("weight_decay")
    assert exc.value.field == "optimizer_args"


@pytest.mark.parametrize("name", sorted(OPTIMIZER_FACTORIES))
def test_every_optimizer_steps(name):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(64, 80))
    lr = 1.0 if name in ("Prodigy", "DAdaptAdam") else 1e-2
    opt = build_optimizer(name, [{"params": [p], "lr": lr}], lr, "")
    before = p.detach().clone()
    (p**2).sum().backward()
    opt.step()
    assert not torch.equal(before, p.detach()), name


def test_warmup_fraction_and_int():
    assert warmup_steps(0.1, 200) == 20
    assert warmup_steps(20, 200) == 20


def test_constant_with_warmup_rejected():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([p], lr=1e-3)
    with pytest.raises(TrainingError) as exc:
        build_lr_scheduler("constant", opt, total_steps=10, warmup=2, num_cycles=1, power=1.0)
    assert exc.value.field == "lr_warmup_steps"


def test_cosine_with_warmup_shape():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([p], lr=1.0)
    sched = build_lr_scheduler("cosine", opt, total_steps=10, warmup=0.2, num_cycles=1, power=1.0)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0 and lrs[1] == pytest.approx(0.5) and lrs[2] == pytest.approx(1.0)
    assert lrs[-1] < 0.1


def test_schedule_matches_diffusers_ddpm():
    from diffusers import DDPMScheduler

    ref = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
    assert torch.equal(alphas_cumprod(), ref.alphas_cumprod)  # kohya's schedule where a model has none
    x0, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = torch.tensor([10, 900])
    ours = NoiseSchedule("v_prediction")
    assert torch.allclose(ours.add_noise(x0, eps, t), ref.add_noise(x0, eps, t), atol=1e-5)
    assert torch.allclose(ours.target(x0, eps, t), ref.get_velocity(x0, eps, t), atol=1e-5)
    assert torch.equal(NoiseSchedule("epsilon").target(x0, eps, t), eps)


def test_min_snr_weights():
    s = NoiseSchedule("epsilon")
    t = torch.tensor([0, 999])
    w = s.min_snr_weights(t, 5.0)
    snr = s.snr[t]
    assert w[0] == pytest.approx(5.0 / snr[0].item())  # high SNR is capped
    assert w[1] == pytest.approx(1.0)  # low SNR keeps weight 1
    wv = NoiseSchedule("v_prediction").min_snr_weights(t, 5.0)
    assert wv[1] == pytest.approx(snr[1].item() / (snr[1].item() + 1))


def test_timesteps_range_and_noise_offsets():
    g = torch.Generator().manual_seed(0)
    t = sample_timesteps(1000, 100, 200, g, torch.device("cpu"))
    assert t.min() >= 100 and t.max() < 200
    assert (sample_timesteps(3, 500, 500, g, torch.device("cpu")) == 500).all()
    lat = torch.zeros(64, 4, 16, 16)
    plain = make_noise(lat, torch.Generator().manual_seed(1))
    offset = make_noise(lat, torch.Generator().manual_seed(1), noise_offset=0.5)
    # the offset adds one constant per (sample, channel)
    d = offset - plain
    assert torch.allclose(d, d[:, :, :1, :1].expand_as(d), atol=1e-6) and d.abs().mean() > 0.1
    multi = make_noise(lat, torch.Generator().manual_seed(1), offset_type="Multires", multires_iterations=6)
    assert math.isclose(multi.std().item(), 1.0, rel_tol=1e-3)
