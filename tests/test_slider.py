"""Slider wizard (trainer.slider): spec and checks, both methods end to end, the preview grid, the event
stream, Stop, the CLI, and a measurement of what the slider does to the model's predictions.

The end-to-end runs use a tiny SD1 model made for this file (`disc_model`): the tiny VAE already has
SD's latent statistics (trainer.tiny.calibrate_tiny_vae) and the UNet is pretrained for 200 steps on red discs of many sizes. A purely random
UNet cannot denoise at all (loss ≈ 1), so no LoRA trained on it shows a direction; after the pretraining
it has a prior over disc sizes, and a slider between small (A) and big (B) discs can pick from it, as a
real slider picks from a real model's prior. Trainings are short and gentle (30 steps, lr 2e-4).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from trainer.events import read_events
from trainer.slider import SliderPair, SliderSpec, SliderSpecError, plan_stages, validate_spec
from trainer.tiny import make_image_folder

REPO = Path(__file__).resolve().parent.parent
PROMPT = "a red disc"
SMALL, BIG = 0.25, 0.8  # radius fractions of the low (A) and high (B) discs
TRAIN = dict(max_train_steps=30, learning_rate=2e-4, lr_warmup_steps=0, resolution="64",
             train_args={"mixed_precision": "no", "min_bucket_reso": 64, "max_bucket_reso": 128})
PREVIEW = dict(preview_steps=2, preview_seeds=[1, 2])


@pytest.fixture(scope="module", autouse=True)
def one_cpu_thread():
    """One intra-op thread (as tests/test_engine.py): faster on a shared CPU, and deterministic."""
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


# ---- the test model and data ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def disc_model(tmp_path_factory) -> Path:
    return make_disc_model(tmp_path_factory.mktemp("slider-model"))


def make_disc_model(root: Path, *, steps: int = 200) -> Path:
    """A tiny SD1 diffusers model whose VAE has SD's latent scale and whose UNet knows red discs."""
    from trainer.data import images as imageops
    from trainer.tiny import build_tiny_pipeline
    from trainer.training.noise import NoiseSchedule, sample_timesteps

    pipe = build_tiny_pipeline("sd1")
    vae, unet = pipe.vae, pipe.unet
    images = []
    for i, radius in enumerate((0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)):
        images += make_image_folder(root / "pretrain" / str(i), 4, radius_frac=radius, seed=100 + i)
    with torch.no_grad():
        pixels = torch.stack([imageops.to_tensor(imageops.load_image(p)) for p in images])
        latents = vae.encode(pixels).latent_dist.mean * 0.18215
        ids = pipe.tokenizer([PROMPT], padding="max_length", max_length=77, return_tensors="pt").input_ids
        cond = pipe.text_encoder(ids)[0]
    schedule, gen = NoiseSchedule("epsilon"), torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    unet.train()
    for _ in range(steps):
        x = latents[torch.randint(0, len(latents), (8,), generator=gen)]
        noise = torch.randn(x.shape, generator=gen)
        t = sample_timesteps(8, 0, 1000, gen, torch.device("cpu"))
        pred = unet(schedule.add_noise(x, noise, t), t, encoder_hidden_states=cond.expand(8, -1, -1)).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5, f"the tiny UNet did not learn to denoise (loss {loss.item():.3f})"
    unet.eval()
    pipe.save_pretrained(root / "model", safe_serialization=True)
    return root / "model"


@pytest.fixture(scope="module")
def disc_pairs(tmp_path_factory) -> list[SliderPair]:
    """Two pairs ("front", "side") of 3 images each: small (low) vs big (high) red discs, identical
    otherwise (same seed: background, colour, position). The side/low images have caption files."""
    root = tmp_path_factory.mktemp("slider-data")
    pairs = []
    for name, seed in (("front", 3), ("side", 5)):
        caption = "a small red disc" if name == "side" else None
        make_image_folder(root / name / "small", 3, radius_frac=SMALL, seed=seed, caption=caption)
        make_image_folder(root / name / "big", 3, radius_frac=BIG, seed=seed)
        pairs.append(SliderPair(str(root / name / "small"), str(root / name / "big"), name))
    return pairs


def slider_spec(out: Path, model: Path, pairs: list[SliderPair], **overrides) -> SliderSpec:
    values = dict(pairs=pairs, model=str(model), prompt=PROMPT, output_dir=str(out), output_name="disc",
                  **TRAIN, **PREVIEW)
    values.update(overrides)
    return SliderSpec(**values)


def run(spec: SliderSpec):
    """run_slider in this process without signal handlers; returns (result, events)."""
    from trainer.slider.run import run_slider
    from trainer.train import StopSignal

    result = run_slider(spec, stop=StopSignal(spec.files().stop, install_handlers=False))
    return result, read_events(spec.files().events)


def of_type(events: list[dict], type_: str) -> list[dict]:
    return [e for e in events if e["type"] == type_]


def folder_state(folder: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir())}


@pytest.fixture(scope="module")
def copy_run(tmp_path_factory, disc_model, disc_pairs):
    sources = {p: folder_state(p) for pair in disc_pairs for p in (pair.low, pair.high)}
    out = tmp_path_factory.mktemp("copy")
    spec = slider_spec(out, disc_model, disc_pairs, method="copy", work_dir=str(out / "work"))
    result, events = run(spec)
    assert result.status == "completed", (result.message, of_type(events, "error"))
    return spec, result, events, sources


@pytest.fixture(scope="module")
def paired_run(tmp_path_factory, disc_model, disc_pairs):
    spec = slider_spec(tmp_path_factory.mktemp("paired"), disc_model, disc_pairs, method="paired")
    result, events = run(spec)
    assert result.status == "completed", (result.message, of_type(events, "error"))
    return spec, result, events


# ---- spec, checks, CLI parsing (no training) ------------------------------------------------------
def test_spec_defaults_are_the_slider_preset():
    preset = json.loads((REPO / "presets" / "sd15_slider_pair.json").read_text())
    spec = SliderSpec()
    for key in ("network_dim", "network_alpha", "optimizer_type", "learning_rate", "max_train_steps",
                "lr_warmup_steps", "lr_scheduler", "network_train_unet_only", "save_precision", "resolution"):
        assert getattr(spec, key) == preset[key], key
    assert (spec.method, spec.ratio, spec.new_rank, spec.resize_rank, spec.resize_method, spec.resize_param) == \
        ("copy", 1.5, 8, 4, "sv_fro", 0.75)
    assert spec.resize_enabled() and not SliderSpec(method="paired").resize_enabled()
    assert spec.preview_weights == [-1.0, -0.5, 0.0, 0.5, 1.0]


def test_spec_json_round_trip_and_errors(tmp_path):
    spec = SliderSpec(pairs=[SliderPair("a", "b", "front")], model="m", prompt="p", output_dir="out",
                      train_args={"mixed_precision": "bf16"}, preview_prompts=["x --n y"])
    path = tmp_path / "spec.json"
    spec.save(path)
    loaded = SliderSpec.load(path)
    # relative folders in a spec file are relative to the file
    assert loaded.pairs[0].low == str(tmp_path / "a") and loaded.output_dir == str(tmp_path / "out")
    assert loaded.train_args == {"mixed_precision": "bf16"} and loaded.preview_prompts == ["x --n y"]
    assert SliderSpec.from_dict({"pairs": [["x", "y"]]}).pairs == [SliderPair("x", "y", "")]
    with pytest.raises(SliderSpecError) as err:
        SliderSpec.from_dict({"network_dim": 0, "methd": "copy", "preview_weights": ["a"], "pairs": "x",
                              "resize_method": "svd"})
    assert {i.field for i in err.value.issues} == {"network_dim", "methd", "preview_weights", "pairs",
                                                   "resize_method"}


def test_validate_spec_names_the_field_to_fix(tmp_path, tiny_sd1):
    low, high = tmp_path / "low", tmp_path / "high"
    make_image_folder(low, 2)
    make_image_folder(high, 3)

    def codes(**kw) -> dict[str, str]:
        values = dict(pairs=[SliderPair(str(low), str(high))], model=str(tiny_sd1), prompt=PROMPT,
                      output_dir=str(tmp_path / "out"))
        values.update(kw)
        return {i.code: i.field for i in validate_spec(SliderSpec(**values)) if i.level == "error"}

    assert codes() == {}
    assert codes(pairs=[]) == {"no_pairs": "pairs"}
    assert codes(pairs=[SliderPair(str(low), str(tmp_path / "nope"))]) == {"dir_missing": "pairs"}
    assert codes(pairs=[SliderPair(str(low), str(low))]) == {"pair_same_folder": "pairs"}
    assert codes(pairs=[SliderPair(str(low), str(high), "a"), SliderPair(str(low), str(high), "a")]) == \
        {"pair_name_duplicate": "pairs"}
    assert codes(prompt="") == {"prompt_empty": "prompt"}  # no caption files and no prompt
    assert codes(method="paired") == {"pair_mismatch": "pairs"}  # 2 vs 3 images: neither names nor order match
    assert codes(model=str(tmp_path / "missing")) == {"model_path_invalid": "model"}
    assert codes(resize=True, resize_param=1.5) == {"bad_value": "resize_param"}
    assert codes(train_args={"output_dir": "x"}) == {"train_arg_owned": "train_args"}
    assert codes(optimizer_type="Nope") == {"bad_value": "optimizer_type"}
    assert codes(train_args={"optimizer_type": "AdamW"}) == {"train_arg_owned": "train_args"}
    assert codes(train_args={"clip_skip": "two"}) == {"bad_value": "train_args"}
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "slider.safetensors").write_bytes(b"")
    assert codes() == {"output_exists": "output_name"}


def test_match_images_and_stages(tmp_path):
    from trainer.slider import match_images

    a = [Path("x/1.png"), Path("x/2.png")]
    assert match_images(a, [Path("y/1.png"), Path("y/2.png")])[1] == "name"
    pairs, how = match_images(a, [Path("y/b.png"), Path("y/a.png")])
    assert how == "order" and pairs[0] == (Path("x/1.png"), Path("y/b.png"))
    with pytest.raises(ValueError):
        match_images(a, [Path("y/1.png")], "order")
    spec = SliderSpec(pairs=[SliderPair("a", "b", "front"), SliderPair("c", "d", "side")])
    assert [s.name for s in plan_stages(spec)] == ["train front/low", "train front/high", "train side/low",
                                                   "train side/high", "svd_merge", "resize", "preview"]
    assert [s.name for s in plan_stages(SliderSpec(method="paired", preview=False))] == ["train paired"]


def test_cli_flags_override_the_spec_file(tmp_path):
    from trainer.slider.__main__ import build_parser, parse_resize, spec_from_args

    path = tmp_path / "spec.json"
    SliderSpec(model="base", ratio=2.0, train_args={"seed": 1}).save(path)
    args = build_parser().parse_args([
        "--spec", str(path), "--method", "paired", "--pair", "lo", "hi", "--pair", "lo2", "hi2",
        "--pair_name", "front", "--prompt", "a face", "--output_dir", "out", "--network_dim", "8",
        "--resize", "sv_cumulative:0.9", "--no-preview", "--train_arg", "mixed_precision=bf16",
        "--train_arg", "cache_latents=false", "--preview_weights", "-2", "2"])
    spec = spec_from_args(args)
    assert spec.model.endswith("base") and spec.ratio == 2.0 and spec.method == "paired"
    assert [(p.low, p.high, p.name) for p in spec.pairs] == [("lo", "hi", "front"), ("lo2", "hi2", "")]
    assert spec.pair_names() == ["front", "pair2"]
    assert (spec.network_dim, spec.resize, spec.resize_method, spec.resize_param, spec.preview) == \
        (8, True, "sv_cumulative", 0.9, False)
    assert spec.train_args == {"seed": 1, "mixed_precision": "bf16", "cache_latents": False}
    assert spec.preview_weights == [-2.0, 2.0]
    assert parse_resize("off") == {"resize": False}
    assert parse_resize("fixed") == {"resize": True, "resize_method": None, "resize_param": None}
    with pytest.raises(ValueError):
        parse_resize("sv_fro")


def test_cli_dry_run(tmp_path, tiny_sd1):
    make_image_folder(tmp_path / "lo", 2, caption="x")
    make_image_folder(tmp_path / "hi", 2, caption="y")
    proc = subprocess.run([sys.executable, "-m", "trainer.tools", "slider", "--dry_run", "--pair", str(tmp_path / "lo"),
                           str(tmp_path / "hi"), "--model", str(tiny_sd1), "--output_dir", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "stage 1: train pair1/low (400 steps)" in proc.stdout and "stage 4: resize" in proc.stdout
    assert not (tmp_path / "out").exists()
    proc = subprocess.run([sys.executable, "-m", "trainer.tools", "slider", "--dry_run"], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 1 and "[pairs] no image folder pairs given" in proc.stderr


def test_spec_checks_and_cli_parsing_do_not_import_torch(tmp_path):
    """The GUI process builds, checks and saves specs and reads the stream: no torch there."""
    make_image_folder(tmp_path / "lo", 1, caption="x")
    code = (
        "import sys\n"
        "from trainer.slider import SliderSpec, SliderPair, validate_spec, plan_stages, slider_command\n"
        "from trainer.slider.progress import SliderEvents\n"
        "from trainer.slider.__main__ import build_parser, spec_from_args\n"
        f"spec = SliderSpec(pairs=[SliderPair({str(tmp_path / 'lo')!r}, {str(tmp_path / 'lo')!r})])\n"
        "validate_spec(spec); plan_stages(spec); spec.to_json(); slider_command('x.json')\n"
        "spec_from_args(build_parser().parse_args(['--pair', 'a', 'b', '--resize', 'off']))\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'peft') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "HEAVY []" in proc.stdout, proc.stderr[-2000:] + proc.stdout


# ---- copy-machine -------------------------------------------------------------------------------------
def kohya_keys_ok(lora_path: Path) -> dict:
    from safetensors import safe_open

    from trainer.network.kohya_format import read_lora_file

    with safe_open(str(lora_path), "pt") as f:
        keys, metadata = list(f.keys()), f.metadata()
        dtypes = {f.get_tensor(k).dtype for k in keys}
    assert keys and all(k.startswith("lora_unet_") and k.endswith((".lora_down.weight", ".lora_up.weight", ".alpha"))
                        for k in keys), keys[:3]
    lora = read_lora_file(lora_path)
    assert len(lora.modules) * 3 == len(keys) and not lora.unrecognized_keys
    return {"metadata": metadata, "dtypes": dtypes, "lora": lora}


def check_stream(events: list[dict], total_steps: int, stage_kinds: list[str]) -> None:
    """One start, one done, steps numbered 1..total across all trainings, stages in order."""
    assert [e["type"] for e in events].count("start") == 1 and events[-1]["type"] == "done"
    assert events[-1]["status"] == "completed" and events[-1]["steps_done"] == total_steps
    steps = of_type(events, "step")
    assert [e["step"] for e in steps] == list(range(1, total_steps + 1))
    assert all(e["total_steps"] == total_steps for e in steps) and steps[-1]["eta_sec"] == 0
    assert of_type(events, "start")[0]["total_steps"] == total_steps
    stages = of_type(events, "stage")
    assert [s["kind"] for s in stages] == stage_kinds
    assert [s["index"] for s in stages] == list(range(1, len(stage_kinds) + 1))
    assert not of_type(events, "error") and not of_type(events, "epoch")


def check_preview(path: Path, rows: int) -> None:
    from PIL import Image

    from trainer.slider.preview import GridLayout

    with Image.open(path) as img:
        assert img.size == GridLayout(columns=5, rows=rows, cell_width=64, cell_height=64).size
        info = json.loads(img.text["slider_preview"])
    assert info["lora_weights"] == [-1.0, -0.5, 0.0, 0.5, 1.0] and [r["seed"] for r in info["rows"]] == [1, 2]


def test_copy_machine_end_to_end(copy_run):
    spec, result, events, sources = copy_run
    files = spec.files()
    check_stream(events, 4 * 30, ["train"] * 4 + ["merge", "resize", "preview"])
    assert [s["name"] for s in of_type(events, "stage")][:4] == ["train front/low", "train front/high",
                                                                 "train side/low", "train side/high"]
    assert [e["epoch"] for e in of_type(events, "step")][::30] == [1, 2, 3, 4]  # `epoch` = the training
    saved = of_type(events, "saved")
    assert [e["kind"] for e in saved] == ["intermediate"] * 5 + ["final"]
    assert saved[-1]["path"] == str(files.lora) == str(result.lora)
    assert of_type(events, "sample")[0]["paths"] == [str(files.preview)]

    final = kohya_keys_ok(result.lora)
    assert final["dtypes"] == {torch.float16}
    assert max(m.rank for m in final["lora"].modules.values()) <= 4  # resized, dynamic sv_fro 0.75
    assert final["metadata"]["ss_output_name"] == "disc" and "copy-machine" in final["metadata"]["ss_training_comment"]
    check_preview(result.preview, rows=2)

    # The intermediates: trained by the engine with the slider settings (CAME), kept in the work folder.
    assert result.intermediates == [files.intermediate(p, s) for p in ("front", "side") for s in ("low", "high")]
    for path in result.intermediates:
        meta = kohya_keys_ok(path)["metadata"]
        assert meta["ss_optimizer"].startswith("CAME") and meta["ss_network_dim"] == "4"
        assert meta["ss_network_alpha"] == "1.0" and meta["ss_steps"] == "30"
        assert json.loads(path.with_suffix(".json").read_text())["network_train_unet_only"] is True
    # Sources copied, never moved or changed; a caption file beside every copy (own caption, else prompt).
    assert {p: folder_state(p) for p in sources} == sources
    side_low = files.data_dir("side", "low") / "1_low"
    front_high = files.data_dir("front", "high") / "1_high"
    assert {p.read_text().strip() for p in side_low.glob("*.txt")} == {"a small red disc"}
    assert {p.read_text().strip() for p in front_high.glob("*.txt")} == {PROMPT}
    assert len(list(front_high.glob("*.png"))) == 3


def delta_weights(lora) -> dict[str, torch.Tensor]:
    return {name: m.delta_weight().double() for name, m in lora.modules.items()}


def assert_same_deltas(a, b, rel: float) -> None:
    da, db = delta_weights(a), delta_weights(b)
    assert da.keys() == db.keys()
    worst = max(float((da[k] - db[k]).norm() / max(float(db[k].norm()), 1e-12)) for k in da)
    assert worst <= rel, worst


def test_copy_machine_is_one_svd_merge_of_the_intermediates(copy_run):
    from trainer.network.kohya_format import read_lora_file
    from trainer.tools import resize_lora, svd_merge_loras

    spec, result, _, _ = copy_run
    loras = [read_lora_file(p) for p in result.intermediates]  # front/low, front/high, side/low, side/high
    expected, _ = svd_merge_loras(loras, [-1.5, 1.5, -1.5, 1.5], 8)
    merged = read_lora_file(result.merged)
    assert_same_deltas(merged, expected, rel=1e-5)
    resized, _ = resize_lora(merged, 4, dynamic_method="sv_fro", dynamic_param=0.75)
    assert_same_deltas(read_lora_file(result.lora), resized, rel=2e-3)  # saved in fp16


def test_copy_machine_reuses_intermediates(copy_run, tmp_path):
    spec, result, _, _ = copy_run
    again = SliderSpec.from_dict({**spec.to_dict(), "output_dir": str(tmp_path), "reuse_intermediates": True,
                                  "preview": False, "resize": False})
    result2, events = run(again)
    assert result2.status == "completed", of_type(events, "error")
    assert not of_type(events, "step") and sum("reusing" in e["message"] for e in of_type(events, "log")) == 4
    from trainer.network.kohya_format import read_lora_file

    assert_same_deltas(read_lora_file(result2.lora), read_lora_file(result.merged), rel=2e-3)


def test_copy_machine_stops_inside_a_training(tmp_path, disc_model, disc_pairs):
    from trainer.slider.run import run_slider

    class StopAfter:
        """Stop requested from the 3rd check on (the engine checks after every step)."""

        def __init__(self) -> None:
            self.checks = 0

        def requested(self) -> bool:
            self.checks += 1
            return self.checks >= 3

    spec = slider_spec(tmp_path, disc_model, disc_pairs[:1], method="copy", max_train_steps=500)
    result = run_slider(spec, stop=StopAfter())
    events = read_events(spec.files().events)
    assert result.status == "stopped" and result.exit_code == 0 and events[-1]["status"] == "stopped"
    assert [s["kind"] for s in of_type(events, "stage")] == ["train"]  # nothing after the stopped training
    stopped = spec.files().intermediate_dir / "front-low-stopped.safetensors"
    assert [(e["kind"], e["path"]) for e in of_type(events, "saved")][0] == ("stopped", str(stopped))
    assert not spec.files().lora.exists() and len(of_type(events, "step")) == 3


# ---- paired images ------------------------------------------------------------------------------------
def test_paired_end_to_end(paired_run):
    spec, result, events = paired_run
    check_stream(events, 30, ["train", "preview"])
    assert [e["kind"] for e in of_type(events, "saved")] == ["final"]
    assert "6 image pairs" in " ".join(e["message"] for e in of_type(events, "log"))
    final = kohya_keys_ok(result.lora)
    assert final["dtypes"] == {torch.float16}
    assert {m.rank for m in final["lora"].modules.values()} == {4}  # no resize by default for paired
    meta = final["metadata"]
    assert meta["ss_optimizer"].startswith("CAME") and meta["ss_network_dim"] == "4" and meta["ss_steps"] == "30"
    assert meta["ss_output_name"] == "disc" and "paired images" in meta["ss_training_comment"]
    assert meta["ss_num_train_images"] == "12"
    check_preview(result.preview, rows=2)


def test_error_events_name_the_field(tmp_path, disc_model, disc_pairs):
    # a spec problem: no training starts
    result, events = run(slider_spec(tmp_path / "a", disc_model, [SliderPair(disc_pairs[0].low, str(tmp_path))]))
    assert result.status == "failed" and result.exit_code == 1 and not of_type(events, "start")
    assert of_type(events, "error")[0]["field"] == "pairs" and events[-1]["status"] == "failed"
    # an engine error inside a training: the TrainConfig field is shown as the spec's
    spec = slider_spec(tmp_path / "b", disc_model, disc_pairs[:1], method="paired",
                       train_args={**TRAIN["train_args"], "optimizer_args": "nonsense"})
    result, events = run(spec)
    error = of_type(events, "error")[0]
    assert result.status == "failed" and error["code"] in ("optimizer_args_syntax", "bad_optimizer_args") and error["field"] == "train_args"


# ---- what the slider does ----------------------------------------------------------------------------
def test_slider_moves_the_prediction_from_a_to_b(copy_run, paired_run, disc_model, disc_pairs, capsys):
    """Measured with trainer.slider.measure (see its docstring): from the noisy midpoint of each (A, B)
    latent pair, where does the one-step x̂0 land on the A→B axis (−1 = A, +1 = B), and how well does
    the model fit each image, with the slider at −1, 0, +1. Asserted: the order of the positions and the
    direction of the fit, which held for every seed tried (see the report); the sizes are printed."""
    from trainer.network.kohya_format import read_lora_file
    from trainer.slider.measure import assignment_margin, measure_slider
    from trainer.slider.spec import list_images
    from trainer.tools.models import load_base_model

    model = load_base_model(disc_model)
    pairs = [pair for p in disc_pairs for pair in zip(list_images(p.low), list_images(p.high))]
    lines = []
    for label, result in (("copy", copy_run[1]), ("paired", paired_run[1])):
        shifts = measure_slider(model, read_lora_file(result.lora), pairs, prompt=PROMPT, weights=(-1.0, 0.0, 1.0),
                                timesteps=(100, 300, 500, 700), noises=2)
        minus, base, plus = shifts
        for s in shifts:
            lines.append(f"{label:6} w={s.weight:+.0f} position {s.position:+.4f}  loss A {s.loss_low:.4f}  "
                         f"loss B {s.loss_high:.4f}  |x0-zA| {s.error_low:.4f}  |x0-zB| {s.error_high:.4f}")
        lines.append(f"{label:6} assignment margin {assignment_margin(shifts):+.4f}")
        assert minus.position < base.position < plus.position, (label, shifts)
        assert plus.loss_high < minus.loss_high and minus.loss_low < plus.loss_low, (label, shifts)
        assert assignment_margin(shifts) > 0
    with capsys.disabled():
        print("\nslider measurement (tiny disc model):\n" + "\n".join(lines))


# ---- Stop and the CLI ----------------------------------------------------------------------------------
def test_cli_run_stops_on_the_stop_file(tmp_path, disc_model, disc_pairs):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "trainer.tools", "slider", "--method", "paired", "--pair", disc_pairs[0].low,
           disc_pairs[0].high, "--model", str(disc_model), "--prompt", PROMPT, "--output_dir", str(out),
           "--output_name", "stopme", "--max_train_steps", "2000", "--resolution", "64", "--no-preview", "--quiet",
           "--train_arg", "mixed_precision=no", "--train_arg", "min_bucket_reso=64"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    events_file = out / "stopme.events.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not of_type(read_events(events_file), "step"):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    (out / "stopme.stop").touch()
    stdout, stderr = proc.communicate(timeout=120)
    events = read_events(events_file)
    assert proc.returncode == 0, stderr
    assert events[-1]["type"] == "done" and events[-1]["status"] == "stopped", events[-3:]
    assert 1 <= events[-1]["steps_done"] < 2000
    stopped = out / "stopme-stopped.safetensors"
    assert of_type(events, "saved")[-1] == {**of_type(events, "saved")[-1], "kind": "stopped", "path": str(stopped)}
    kohya_keys_ok(stopped)
    assert not (out / "stopme.safetensors").exists() and "stopped" in stdout


# ---- the paired method on the training core: accumulation and resume ---------------------------------------
class StopAfter:
    """A stop asked for after `steps` optimizer steps (the loop asks once per step)."""

    def __init__(self, steps: int):
        self.steps, self.asked = steps, 0

    def requested(self) -> bool:
        self.asked += 1
        return self.asked >= self.steps


def paired_losses(tmp_path: Path, disc_model, disc_pairs, name: str, stop=None, **train_args):
    from trainer.events import EventReader
    from trainer.slider.run import run_slider
    from trainer.train import StopSignal

    spec = slider_spec(tmp_path / name, disc_model, disc_pairs, method="paired", max_train_steps=6, preview=False,
                       train_args={**TRAIN["train_args"], **train_args})
    reader = EventReader(spec.files().events)
    reader.poll()  # a resumed run appends to the stopped run's stream
    result = run_slider(spec, stop=stop or StopSignal(None, install_handlers=False))
    events = reader.poll()
    return result, [e["loss"] for e in of_type(events, "step")], spec


def test_paired_gradient_accumulation_is_a_bigger_batch(tmp_path, disc_model, disc_pairs):
    from trainer.network.kohya_format import read_lora_file

    big, big_losses, _ = paired_losses(tmp_path, disc_model, disc_pairs, "batch2", train_batch_size=2)
    accum, accum_losses, _ = paired_losses(tmp_path, disc_model, disc_pairs, "accum2", gradient_accumulation_steps=2)
    assert big.status == accum.status == "completed"
    assert len(accum_losses) == 6 and accum_losses == pytest.approx(big_losses, rel=1e-5)
    one, two = read_lora_file(big.lora).modules, read_lora_file(accum.lora).modules
    for name, module in one.items():
        assert torch.allclose(module.up.float(), two[name].up.float(), atol=2e-3), name  # saved in fp16


def test_paired_stop_then_resume_continues_the_run(tmp_path, disc_model, disc_pairs):
    _, whole, _ = paired_losses(tmp_path, disc_model, disc_pairs, "whole")
    stopped, first, spec = paired_losses(tmp_path, disc_model, disc_pairs, "part", stop=StopAfter(2))
    assert stopped.status == "stopped" and len(first) == 2
    state = spec.files().stopped_lora.with_name(spec.files().stopped_lora.stem + "-state")
    assert (state / "train_state.json").is_file()
    resumed, rest, _ = paired_losses(tmp_path, disc_model, disc_pairs, "part", resume=str(state))
    assert resumed.status == "completed", resumed.message
    assert first + rest == pytest.approx(whole, rel=1e-5)
