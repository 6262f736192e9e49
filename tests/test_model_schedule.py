"""The noise schedule comes from the model's scheduler config; kohya's schedule only where the model has none."""

from __future__ import annotations

import json
import shutil

import torch

from trainer.config import TrainConfig
from trainer.families import load_model
from trainer.families.scheduler_config import training_scheduler_config
from trainer.training.noise import KOHYA_SCHEDULE, NoiseSchedule, alphas_cumprod


def _model_schedule(path) -> NoiseSchedule:
    _family, comp = load_model(TrainConfig(pretrained_model_name_or_path=str(path)))
    return NoiseSchedule.from_scheduler_config(comp.scheduler_config)


def _rewrite_scheduler(folder, **changes) -> None:
    path = folder / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_the_test_models_train_with_kohyas_schedule(tiny_sd1, tiny_sd2v_file):
    for model, prediction in ((tiny_sd1, "epsilon"), (tiny_sd2v_file, "v_prediction")):
        schedule = _model_schedule(model)
        assert schedule.prediction_type == prediction
        assert torch.equal(schedule.alphas_cumprod, alphas_cumprod())


def test_a_model_with_another_beta_schedule_trains_with_its_own(tmp_path, tiny_sd1):
    model = tmp_path / "linear-betas"
    shutil.copytree(tiny_sd1, model)
    _rewrite_scheduler(model, beta_schedule="linear", beta_start=0.0001, beta_end=0.02, num_train_timesteps=500)
    ours = _model_schedule(model).alphas_cumprod

    # DDPM's linear schedule, computed here independently: ᾱ_t = Π_{s<=t} (1 - β_s).
    expected = torch.cumprod(1.0 - torch.linspace(0.0001, 0.02, 500, dtype=torch.float64), dim=0)
    assert ours.shape == (500,)
    assert torch.allclose(ours.double(), expected, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(ours, alphas_cumprod()[:500], atol=1e-2)


def test_kohyas_values_fill_what_the_model_leaves_out(tmp_path, tiny_sd1):
    model = tmp_path / "sparse-scheduler"
    shutil.copytree(tiny_sd1, model)
    (model / "scheduler" / "scheduler_config.json").write_text(json.dumps({"_class_name": "DDIMScheduler"}))
    assert torch.equal(_model_schedule(model).alphas_cumprod, alphas_cumprod())

    shutil.rmtree(model / "scheduler")
    assert torch.equal(_model_schedule(model).alphas_cumprod, alphas_cumprod())


def test_training_config_keeps_the_models_values_and_the_settled_prediction_type():
    own = {"_class_name": "EulerDiscreteScheduler", "beta_end": 0.02, "timestep_spacing": "trailing",
           "prediction_type": "epsilon"}
    config = training_scheduler_config("sd2", own, v_parameterization=True)
    assert config["beta_end"] == 0.02 and config["timestep_spacing"] == "trailing"
    assert config["beta_start"] == KOHYA_SCHEDULE["beta_start"]  # from the bundled SD 2.x config
    assert config["prediction_type"] == "v_prediction" and not any(k.startswith("_") for k in config)
