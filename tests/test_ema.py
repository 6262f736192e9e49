"""EMA of the LoRA weights (trainer.training.ema): the average on its cadence, swapped in for saves and
samples, kept in the resumable state; and a real run whose file holds the average."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import make_run_config
from trainer.network.kohya_format import read_lora_file
from trainer.training.ema import NetworkEMA


def _params(*values: float) -> list[nn.Parameter]:
    return [nn.Parameter(torch.tensor([v])) for v in values]


def test_average_follows_the_cadence_and_the_decay():
    (w,) = params = _params(0.0)
    ema = NetworkEMA(params, decay=0.5, start_step=3, every=2)
    with torch.no_grad():
        for step, value in enumerate([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], start=1):
            w.fill_(value)
            ema.update(step)
            if step < 3:
                assert float(ema.average.shadow_params[0]) == value  # before the start: the weights
    # updates at steps 3, 5, 7 (every 2 from 3) with the decay diffusers ramps, min((1+n)/(10+n), 0.5) for the
    # n-th update after the first (which copies): 3, then d=2/11 with 5, then d=3/12 with 7
    expected = 3.0
    for n, value in ((1, 5.0), (2, 7.0)):
        d = min((1 + n) / (10 + n), 0.5)
        expected = d * expected + (1 - d) * value
    assert float(ema.average.shadow_params[0]) == pytest.approx(expected)
    assert ema.average.optimization_step == 3


def test_applied_swaps_the_average_in_and_back():
    params = _params(1.0, 2.0)
    ema = NetworkEMA(params, decay=0.9)
    with torch.no_grad():
        ema.average.shadow_params[0].fill_(10.0)
        ema.average.shadow_params[1].fill_(20.0)
    with ema.applied():
        assert [float(p.detach()) for p in params] == [10.0, 20.0]
    assert [float(p.detach()) for p in params] == [1.0, 2.0]
    state = ema.state_dict()
    fresh = NetworkEMA(_params(0.0, 0.0), decay=0.9)
    fresh.load_state_dict(state)
    assert [float(p) for p in fresh.average.shadow_params] == [10.0, 20.0]
    with pytest.raises(ValueError):
        NetworkEMA(_params(0.0), decay=0.9).load_state_dict(state)


def test_a_run_with_ema_saves_the_average_and_resumes_it(tmp_path, tiny_sd1):
    from test_engine import make_images, train
    from trainer.training.state import load_state

    images = make_images(tmp_path / "img", "4_sks disc", 2)
    cfg = make_run_config(tmp_path, tiny_sd1, images, max_train_epochs=2, save_every_n_epochs=1, save_state=True,
                          ema_decay=0.9, ema_save_non_ema=True, learning_rate=5e-3)
    code, events = train(cfg)
    assert code == 0
    out = tmp_path / "out"
    averaged, raw = read_lora_file(out / "tiny.safetensors"), read_lora_file(out / "tiny-non_ema.safetensors")
    assert averaged.metadata["ss_ema_decay"] == "0.9"
    differs = [n for n in averaged.modules if not torch.allclose(averaged.modules[n].up, raw.modules[n].up)]
    assert differs  # the file holds the average, not the raw weights
    assert {e["kind"] for e in events if e["type"] == "saved"} >= {"final", "non_ema", "epoch", "state"}
    state = load_state(out / "tiny-000001-state")
    assert state.ema is not None and state.ema["optimization_step"] == 8  # one update per step of epoch 1

    # resuming from epoch 1 continues the average: the final file equals the uninterrupted run's
    code, resumed = train(cfg.replace(output_dir=str(tmp_path / "resumed"), resume=str(out / "tiny-000001-state")))
    assert code == 0
    again = read_lora_file(tmp_path / "resumed" / "tiny.safetensors")
    for name, module in averaged.modules.items():
        torch.testing.assert_close(again.modules[name].up, module.up, rtol=1e-4, atol=1e-6)
