"""Sample prompts (kohya syntax) and sample-image generation during training."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from trainer.config import TrainConfig
from trainer.sampling import SAMPLERS, SamplePrompt, generate_samples, parse_prompts, sample_file_name

# diffusers' k-diffusion schedulers hand torch tensors to numpy 2.4, which warns on every element.
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
]


def test_parse_prompts_kohya_syntax():
    text = """
# a comment line
a red disc --n blurry, low quality --w 130 --h 30 --s 5000 --l 5.5 --d 42 --ss ddim
  plain prompt

another --s 0 --W 96 --unknown 3
"""
    first, second, third = parse_prompts(text)
    assert first == SamplePrompt(prompt="a red disc", negative="blurry, low quality", width=128, height=64,
                                 steps=1000, cfg_scale=5.5, seed=42, sampler="ddim")
    assert second == SamplePrompt(prompt="plain prompt")
    assert (second.width, second.height, second.steps, second.cfg_scale, second.seed) == (512, 512, 30, 7.5, None)
    assert (third.prompt, third.steps, third.width) == ("another", 1, 96)


def test_parse_prompts_from_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# header\nfirst --d 1\nsecond\n", encoding="utf-8")
    assert [p.prompt for p in parse_prompts(str(path))] == ["first", "second"]
    assert parse_prompts("") == []
    assert parse_prompts(str(tmp_path / "missing.txt")) == []


def test_sample_file_name():
    assert sample_file_name("lora", 3, 42, step=123) == "lora_000123_03_42.png"
    assert sample_file_name("lora", 0, 7, step=500, epoch=2) == "lora_e000002_00_7.png"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from trainer.families import load_model
    from trainer.tiny import save_tiny_model

    path = save_tiny_model(tmp_path_factory.mktemp("sampling") / "tiny-sd2-v.safetensors", "sd2-v")
    return load_model(TrainConfig(pretrained_model_name_or_path=str(path)))


def _rng_draws():
    return torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)]


def test_generate_samples_writes_pngs_and_restores_rng(model, tmp_path):
    from PIL import Image

    family, comp = model
    prompts = parse_prompts("a red disc --w 64 --h 64 --s 2 --d 5\na blue disc --n red --w 72 --h 64 --s 2")
    comp.unet.train()
    comp.text_encoder.eval()

    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    expected = _rng_draws()
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    paths = generate_samples(family, comp, prompts, out_dir=tmp_path, output_name="tiny", step=7, epoch=None,
                             sampler="euler_a", device="cpu", dtype=torch.float32, base_seed=100)
    actual = _rng_draws()
    assert torch.equal(expected[0], actual[0]) and np.array_equal(expected[1], actual[1]) and expected[2] == actual[2]

    assert [p.name for p in paths] == ["tiny_000007_00_5.png", "tiny_000007_01_101.png"]
    assert Image.open(paths[0]).size == (64, 64) and Image.open(paths[1]).size == (72, 64)
    assert comp.unet.training and not comp.text_encoder.training and not comp.vae.training

    # same seed, same image; the epoch names the file when given
    again = generate_samples(family, comp, prompts[:1], out_dir=tmp_path, output_name="tiny", step=7, epoch=3,
                             sampler="euler_a", device="cpu", dtype=torch.float32)
    assert again[0].name == "tiny_e000003_00_5.png"
    assert again[0].read_bytes() == paths[0].read_bytes()


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_runs(model, tmp_path, sampler):
    family, comp = model
    prompt = SamplePrompt(prompt="a disc", width=64, height=64, steps=2, seed=1)
    (path,) = generate_samples(family, comp, [prompt], out_dir=tmp_path, output_name="s", step=0,
                               sampler=sampler, device="cpu", dtype=torch.float32)
    assert path.is_file()


def test_sampler_scheduler_keeps_prediction_type(model):
    from trainer.sampling import make_sampler

    _, comp = model
    for name in SAMPLERS:
        assert make_sampler(name, comp.scheduler_config).config.prediction_type == "v_prediction"


def test_samples_with_peft_lora_injected(tmp_path):
    from peft import LoraConfig, inject_adapter_in_model

    from trainer.families import load_model
    from trainer.tiny import save_tiny_model

    path = save_tiny_model(tmp_path / "tiny-sd1", "sd1")
    family, comp = load_model(TrainConfig(pretrained_model_name_or_path=str(path), clip_skip=2))
    inject_adapter_in_model(LoraConfig(r=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]), comp.unet)
    inject_adapter_in_model(LoraConfig(r=4, target_modules=["q_proj", "v_proj"]), comp.text_encoder)
    comp.unet.train()
    comp.text_encoder.train()
    paths = generate_samples(family, comp, "a disc --w 64 --h 64 --s 2 --d 3 --ss dpmsolver++", out_dir=tmp_path,
                             output_name="lora", step=1, sampler="euler", device="cpu", dtype=torch.float32,
                             clip_skip=2, max_token_length=150)
    assert paths[0].name == "lora_000001_00_3.png"
    assert comp.unet.training and comp.text_encoder.training
    assert all(m.training for m in comp.unet.modules())
