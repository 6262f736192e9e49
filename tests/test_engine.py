"""End-to-end tests of the engine: real training runs on the tiny SD models (CPU, 64-128 px, few steps).

Runs go through `python -m trainer --config run.json` (a subprocess) where the process itself is under
test (exit codes, signals, stop file, the event stream a GUI reads) and through
`trainer.train.run_training` in-process elsewhere (same code path minus the CLI, much faster to start).

Settings chosen to keep results robust (see each test): fixed seeds, fp32, constant LR, and for the
overfitting test a single timestep so that the noise level does not hide the trend.
"""

from __future__ import annotations

import hashlib
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import event_types, make_run_config, run_engine
from trainer.config import TrainConfig
from trainer.events import EventReader, EventWriter, events_path
from trainer.tiny import make_image_folder

REPO = Path(__file__).resolve().parent.parent
CAPTION = "sks disc, red circle"
LOSS_TOL = dict(rel=1e-5, abs=1e-6)  # the same computation in another process / after a resume


@pytest.fixture(scope="module", autouse=True)
def one_cpu_thread():
    """Train with one intra-op thread, here and in the engine subprocesses (OMP_NUM_THREADS).

    The tiny models gain nothing from a second thread, and on a shared CPU torch's default (one thread
    per core) makes every op wait for a busy core: measured 5-7x slower runs under load. Results are
    compared only between runs that all use one thread."""
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


# ---- helpers ----------------------------------------------------------------------------------------
def make_images(root: Path, subset: str = "2_sks disc", count: int = 3, **kw) -> Path:
    """`root/<subset>/` with `count` captioned images; returns root (the train_data_dir)."""
    make_image_folder(root / subset, count, caption=kw.pop("caption", CAPTION), **kw)
    return root


def train(cfg: TrainConfig, *, writer=EventWriter) -> tuple[int, list[dict]]:
    """run_training in this process; returns (exit code, the events of this run only)."""
    from trainer.train import StopSignal, run_training

    path = events_path(cfg.output_dir, cfg.output_name)
    reader = EventReader(path)
    reader.poll()  # skip the events of earlier runs into the same output (resume)
    stop = StopSignal(Path(cfg.output_dir) / f"{cfg.output_name}.stop", install_handlers=False)
    with writer(path) as events:
        code = run_training(cfg, events=events, stop=stop)
    return code, reader.poll()


def of_type(events: list[dict], type_: str) -> list[dict]:
    return [e for e in events if e["type"] == type_]


def one(events: list[dict], type_: str) -> dict:
    found = of_type(events, type_)
    assert len(found) == 1, f"expected one {type_} event, got {found}"
    return found[0]


def losses(events: list[dict]) -> list[float]:
    return [e["loss"] for e in of_type(events, "step")]


def assert_completed(code: int, events: list[dict]) -> None:
    errors = of_type(events, "error")
    assert code == 0 and not errors, errors or events[-3:]
    assert events[-1]["type"] == "done" and events[-1]["status"] == "completed", events[-1]


def header(path: Path) -> tuple[dict, bytes]:
    """(safetensors JSON header, the data section) read directly from the file bytes."""
    blob = path.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def file_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def file_metadata(path: Path) -> dict[str, str]:
    return header(path)[0].get("__metadata__", {})


def expected_kohya_keys(unet: nn.Module, text_encoder: nn.Module) -> set[str]:
    """sd-scripts' key set, computed here from the module tree: every Linear/Conv2d inside a
    Transformer2DModel (UNet) or a CLIPAttention/CLIPMLP (text encoder)."""
    from diffusers.models.transformers.transformer_2d import Transformer2DModel
    from transformers.models.clip.modeling_clip import CLIPMLP, CLIPAttention

    names = set()
    for root, prefix, classes in ((unet, "lora_unet_", (Transformer2DModel,)),
                                  (text_encoder, "lora_te_text_model_", (CLIPAttention, CLIPMLP))):
        for block_path, block in root.named_modules():
            if not isinstance(block, classes):
                continue
            for child_path, child in block.named_modules():
                if isinstance(child, (nn.Linear, nn.Conv2d)):
                    path = f"{block_path}.{child_path}".removeprefix("text_model.")
                    names.add(prefix + path.replace(".", "_"))
    return {f"{n}.{s}" for n in names for s in ("lora_down.weight", "lora_up.weight", "alpha")}


def load_base(model: Path):
    """The engine's own loading of a base model: (family, components), fp32 on the CPU."""
    from trainer.families import load_model

    return load_model(TrainConfig(pretrained_model_name_or_path=str(model)))


def engine_lora_model(model: Path, lora_path: Path, cfg: TrainConfig):
    """The base model with our LoRA network injected and the file loaded into it."""
    from trainer.network.kohya_format import read_lora_file
    from trainer.network.lora import LoraNetwork, NetworkSpec

    family, comp = load_base(model)
    network = LoraNetwork.inject(family, comp, NetworkSpec.from_config(cfg))
    report = network.load_lora_file(read_lora_file(lora_path))
    assert not report.missing and not report.unexpected, str(report)
    network.eval()
    return comp, network


@torch.no_grad()
def model_outputs(unet, text_encoder, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn(2, 4, 8, 8, generator=gen)
    ids = torch.randint(0, 49406, (2, 77), generator=gen)
    hidden = text_encoder(ids)[0]
    return hidden, unet(latents, torch.tensor([10, 500]), encoder_hidden_states=hidden).sample


def start_engine(cfg: TrainConfig, tmp_path: Path) -> subprocess.Popen:
    run_json = tmp_path / "run.json"
    cfg.save(run_json)
    with open(tmp_path / "engine.log", "wb") as log:  # the child keeps its own handle
        return subprocess.Popen([sys.executable, "-m", "trainer", "--config", str(run_json), "--quiet"],
                                stdout=log, stderr=subprocess.STDOUT, cwd=REPO)


def wait_for_step(proc: subprocess.Popen, cfg: TrainConfig, step: int, timeout: float = 300) -> None:
    reader = EventReader(events_path(cfg.output_dir, cfg.output_name))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e["type"] == "step" and e["step"] >= step for e in reader.poll()):
            return
        assert proc.poll() is None, f"the engine exited ({proc.returncode}) before step {step}"
        time.sleep(0.005)
    proc.kill()
    pytest.fail(f"no step {step} within {timeout} s")


def read_run_events(cfg: TrainConfig) -> list[dict]:
    return EventReader(events_path(cfg.output_dir, cfg.output_name)).poll()


# ---- 1. files, keys, metadata, config and events of a 2-epoch run (subprocess) -----------------------
def test_two_epoch_run_writes_kohya_files_config_and_events(tmp_path, tiny_sd1):
    from diffusers import StableDiffusionPipeline

    train_dir = make_images(tmp_path / "img")  # 3 images x 2 repeats = 6 steps per epoch
    cfg = make_run_config(tmp_path, tiny_sd1, train_dir, training_comment="sks")
    proc, events = run_engine(cfg, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_completed(proc.returncode, events)
    out = Path(cfg.output_dir)
    epoch1, final = out / "tiny-000001.safetensors", out / "tiny.safetensors"

    # Files: one epoch file (sd-scripts writes none for the last epoch; the final file is that one).
    assert epoch1.is_file() and final.is_file()
    assert not (out / "tiny-000002.safetensors").exists()
    assert sorted(p.name for p in out.iterdir()) == ["tiny-000001.safetensors", "tiny.events.jsonl", "tiny.json",
                                                      "tiny.safetensors"]

    # Keys: computed independently from the model's module tree.
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd1, local_files_only=True)
    expected = expected_kohya_keys(pipe.unet, pipe.text_encoder)
    assert len(expected) == (72 + 30) * 3  # tiny layouts: 6 transformers x 12 layers; 5 CLIP layers x 6
    for path in (epoch1, final):
        head, _ = header(path)
        keys = set(head) - {"__metadata__"}
        assert keys == expected, (sorted(keys - expected)[:5], sorted(expected - keys)[:5])
        assert {head[k]["dtype"] for k in keys} == {"F32"}  # save_precision float
        tensors = file_tensors(path)
        assert all(tensors[k].dim() == 0 and tensors[k].item() == 2.0 for k in keys if k.endswith(".alpha"))
        assert any(tensors[k].abs().max() > 0 for k in keys if k.endswith("lora_up.weight")), "nothing was trained"
        down = tensors["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight"]
        assert down.shape == (4, 32)

    # Metadata (sd-scripts' values, all strings).
    meta = file_metadata(final)
    expected_meta = {
        "ss_network_module": "networks.lora", "ss_network_dim": "4", "ss_network_alpha": "2.0",
        "ss_epoch": "2", "ss_steps": "12", "ss_max_train_steps": "12", "ss_num_epochs": "2",
        "ss_num_train_images": "6", "ss_num_reg_images": "0", "ss_num_batches_per_epoch": "6",
        "ss_learning_rate": "0.001", "ss_lr_scheduler": "constant", "ss_seed": "1", "ss_v2": "False",
        "ss_base_model_version": "sd_v1", "ss_resolution": "(64, 64)", "ss_output_name": "tiny",
        "ss_sd_model_name": "tiny-sd1", "ss_training_comment": "sks", "ss_mixed_precision": "no",
        "modelspec.sai_model_spec": "1.0.1", "modelspec.architecture": "stable-diffusion-v1/lora",
        "modelspec.implementation": "diffusers", "modelspec.title": "tiny", "modelspec.resolution": "64x64",
        "modelspec.prediction_type": "epsilon",
    }
    assert {k: meta.get(k) for k in expected_meta} == expected_meta
    assert json.loads(meta["ss_dataset_dirs"]) == {"2_sks disc": {"n_repeats": 2, "img_count": 3}}
    assert json.loads(meta["ss_tag_frequency"]) == {"2_sks disc": {"sks disc": 3, "red circle": 3}}
    assert json.loads(meta["ss_reg_dataset_dirs"]) == {}
    bucket_info = json.loads(meta["ss_bucket_info"])
    assert [b["resolution"] for b in bucket_info["buckets"].values()] == [[64, 64]]
    assert float(meta["ss_training_finished_at"]) >= float(meta["ss_training_started_at"])
    # sshs_*: sd-scripts hashes the file serialized with only its ss_* metadata (A1111 shows these).
    from safetensors.torch import save

    tensors = file_tensors(final)
    blob = save(tensors, {k: v for k, v in meta.items() if k.startswith("ss_")})
    data = blob[8 + int.from_bytes(blob[:8], "little"):]
    assert data == header(final)[1]  # the data section does not depend on the metadata
    assert meta["sshs_model_hash"] == hashlib.sha256(data).hexdigest()
    assert meta["sshs_legacy_hash"] == hashlib.sha256(blob[0x100000:0x110000]).hexdigest()[:8]
    meta1 = file_metadata(epoch1)
    assert (meta1["ss_epoch"], meta1["ss_steps"]) == ("1", "6")
    assert meta1["ss_session_id"] == meta["ss_session_id"]

    # The run's config beside the files equals the config it was started with.
    assert TrainConfig.load(out / "tiny.json") == cfg
    assert json.loads((out / "tiny.json").read_text()) == cfg.to_dict()

    # Events: start ... step ... saved ... done, with the announced step count.
    types = event_types(events)
    assert types.count("start") == 1 and types.count("done") == 1 and types[-1] == "done"
    assert set(types[:types.index("start")]) <= {"log", "warning"}
    start, steps = one(events, "start"), of_type(events, "step")
    assert start["total_steps"] == len(steps) == 12
    assert (start["epochs"], start["steps_per_epoch"], start["num_train_images"]) == (2, 6, 6)
    assert start["resumed_from_step"] == 0 and start["config_path"] == str(out / "tiny.json")
    assert [s["step"] for s in steps] == list(range(1, 13))
    assert [s["epoch"] for s in steps] == [1] * 6 + [2] * 6
    assert all(math.isfinite(s["loss"]) and s["total_steps"] == 12 and s["lr"] == 1e-3 for s in steps)
    # the resource line: this engine process's memory (a model loaded: well above 100 MB) and CPU; no GPU here
    assert all(0.1 < s["resources"]["ram_gib"] < 64 and s["resources"]["cpu_percent"] >= 0 for s in steps)
    assert not any("vram_total_gib" in s["resources"] for s in steps)
    assert [e["epoch"] for e in of_type(events, "epoch")] == [1, 2]
    saved = of_type(events, "saved")
    assert [(s["kind"], s["epoch"], s["step"], s["path"]) for s in saved] == [
        ("epoch", 1, 6, str(epoch1)), ("final", 2, 12, str(final))]
    assert saved[0]["size_bytes"] == epoch1.stat().st_size
    pos = {k: i for i, e in enumerate(events) for k in [(e["type"], e.get("step"), e.get("kind"))]}
    assert pos[("step", 6, None)] < pos[("saved", 6, "epoch")] < pos[("step", 7, None)]
    assert pos[("step", 12, None)] < pos[("saved", 12, "final")] < len(events) - 1
    done = events[-1]
    assert done["files"] == [str(epoch1), str(final)] and done["steps_done"] == 12


# ---- 2. diffusers loads an engine-trained file with the same effect as the engine's model -----------
@pytest.fixture(scope="module")
def trained_sd1(tmp_path_factory, tiny_sd1):
    """An engine-trained SD1 LoRA with clearly non-zero lora_up (LR 1e-2, 8 steps), saved as float."""
    tmp = tmp_path_factory.mktemp("trained_sd1")
    cfg = make_run_config(tmp, tiny_sd1, make_images(tmp / "img", "8_sks disc", 1), max_train_steps=8,
                          learning_rate=1e-2, save_every_n_epochs=0)
    code, events = train(cfg)
    assert_completed(code, events)
    return cfg, Path(cfg.output_dir) / "tiny.safetensors"


@pytest.mark.parametrize("family", ["sd1", "sd2-v"])
def test_diffusers_load_lora_weights_matches_engine_model(tmp_path, family, request, tiny_sd2v_file):
    if family == "sd1":
        cfg, lora_path = request.getfixturevalue("trained_sd1")
        model = Path(cfg.pretrained_model_name_or_path)
    else:
        model = tiny_sd2v_file
        cfg = make_run_config(tmp_path, model, make_images(tmp_path / "img", "8_sks disc", 1), max_train_steps=8,
                              learning_rate=1e-2, save_every_n_epochs=0)
        code, events = train(cfg)
        assert_completed(code, events)
        lora_path = Path(cfg.output_dir) / "tiny.safetensors"
        meta = file_metadata(lora_path)
        assert meta["ss_base_model_version"] == "sd_v2_v"
        assert meta["modelspec.architecture"] == "stable-diffusion-v2-768-v/lora"
        assert meta["modelspec.prediction_type"] == "v"
    ups = [t for k, t in file_tensors(lora_path).items() if k.endswith("lora_up.weight")]
    assert min(t.abs().max().item() for t in ups) > 1e-3, "every lora_up should have moved from zero"

    comp, _ = engine_lora_model(model, lora_path, cfg)
    ours = model_outputs(comp.unet, comp.text_encoder)

    # diffusers' own pipeline and kohya loader. The sd1 folder is loaded by diffusers itself; the
    # single file through the engine's loader (diffusers' from_single_file would need a hub config).
    from diffusers import StableDiffusionPipeline

    if family == "sd1":
        pipe = StableDiffusionPipeline.from_pretrained(model, local_files_only=True)
    else:
        base_family, base_comp = load_base(model)
        pipe = base_family.sampling_pipeline(base_comp, "ddim")
    base = model_outputs(pipe.unet, pipe.text_encoder)
    pipe.load_lora_weights(str(lora_path))
    theirs = model_outputs(pipe.unet, pipe.text_encoder)

    for label, a, b, b0 in zip(("text encoder", "unet"), ours, theirs, base):
        assert (a - b0).abs().max() > 1e-3, f"{label}: the trained LoRA has no visible effect"
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5, msg=lambda m: f"{label}: {m}")


# ---- 3. overfitting one image lowers the loss -------------------------------------------------------
def test_overfitting_one_image_lowers_the_loss(tmp_path, tiny_sd1):
    """One image, 100 steps, one fixed timestep (t = 900: [min, max) = [900, 901)), AdamW at 5e-3.

    With the timestep fixed only the sampled noise varies between steps (a per-step spread of about
    0.1 on a loss near 1.15); the mean of 10 steps is then good to about 0.03, far below the drop
    (measured with these settings: 1.16 -> 0.69, and 1.15 -> 0.57 with seed 2; ratios 0.59 / 0.50)."""
    cfg = make_run_config(tmp_path, tiny_sd1, make_images(tmp_path / "img", "1_sks disc", 1),
                          max_train_steps=100, learning_rate=5e-3, min_timestep=900, max_timestep=901,
                          save_every_n_epochs=0)
    code, events = train(cfg)
    assert_completed(code, events)
    loss = losses(events)
    assert len(loss) == 100
    first, last = sum(loss[:10]) / 10, sum(loss[-10:]) / 10
    assert last < 0.8 * first, (first, last)


# ---- 4. the torch-free step plan is the steps that run ----------------------------------------------
TRAIN_SIZES = [(128, 128), (160, 96), (96, 160), (200, 70), (64, 64)]
REG_SIZES = [(128, 128), (96, 160), (192, 96)]


@pytest.mark.parametrize("reso_steps,max_steps", [(32, False), (64, False), (32, True)],
                         ids=["steps32", "steps64", "steps32-max_train_steps"])
def test_plan_steps_equals_steps_run(tmp_path, tiny_sd1, reso_steps, max_steps):
    from trainer.data.steps import plan_steps

    train_dir = make_images(tmp_path / "img", "2_sks disc", len(TRAIN_SIZES), sizes=TRAIN_SIZES)
    reg_dir = make_images(tmp_path / "reg", "1_disc", len(REG_SIZES), sizes=REG_SIZES, caption="disc", seed=3)
    cfg = make_run_config(tmp_path, tiny_sd1, train_dir, reg_data_dir=str(reg_dir), resolution="128",
                          bucket_reso_steps=reso_steps, min_bucket_reso=64, max_bucket_reso=256,
                          train_batch_size=2, gradient_accumulation_steps=3, max_train_epochs=2,
                          save_every_n_epochs=1)
    plan = plan_steps(cfg)
    # The scenario is uneven on purpose: several buckets, odd bucket counts (a batch of 1), and a
    # batch count per epoch that the accumulation does not divide (a short last step).
    assert len(plan.buckets) >= 3 and any(b.count % 2 for b in plan.buckets), plan.bucket_table()
    assert plan.batches_per_epoch % 3 != 0, plan.batches_per_epoch
    assert plan.num_train_images == 10 and plan.num_reg_images == 3 and plan.num_reg_samples == 10
    if max_steps:
        cfg = cfg.replace(max_train_steps=plan.steps_per_epoch + 1)  # ends inside the second epoch
        plan = plan_steps(cfg)
        assert plan.epochs == 2 and plan.total_steps == plan.steps_per_epoch + 1

    code, events = train(cfg)
    assert_completed(code, events)
    start, steps = one(events, "start"), of_type(events, "step")
    assert len(steps) == start["total_steps"] == plan.total_steps
    assert [s["step"] for s in steps] == list(range(1, plan.total_steps + 1))
    assert [s["epoch"] for s in steps] == [(i // plan.steps_per_epoch) + 1 for i in range(plan.total_steps)]
    assert (start["epochs"], start["steps_per_epoch"]) == (plan.epochs, plan.steps_per_epoch)
    assert start["buckets"] == plan.bucket_table()
    assert (start["num_train_images"], start["num_reg_images"]) == (10, 3)
    full_epochs = plan.total_steps // plan.steps_per_epoch
    assert len(of_type(events, "epoch")) == full_epochs
    meta = file_metadata(Path(cfg.output_dir) / "tiny.safetensors")
    assert (meta["ss_steps"], meta["ss_max_train_steps"]) == (str(plan.total_steps),) * 2
    assert meta["ss_num_batches_per_epoch"] == str(plan.batches_per_epoch)
    assert (meta["ss_num_reg_images"], meta["ss_total_batch_size"]) == ("3", "6")


# ---- 5. stop (stop file, SIGTERM, SIGINT) and resume --------------------------------------------------
STOP_TOTAL = 24  # 2 images x 4 repeats = 8 steps per epoch, 3 epochs


def stop_config(tmp_path: Path, model: Path) -> TrainConfig:
    return make_run_config(tmp_path, model, make_images(tmp_path / "img", "4_sks disc", 2), max_train_epochs=3,
                           save_every_n_epochs=1, save_state=True, learning_rate=2e-3)


@pytest.fixture(scope="module")
def uninterrupted_losses(tmp_path_factory, tiny_sd1) -> list[float]:
    cfg = stop_config(tmp_path_factory.mktemp("uninterrupted"), tiny_sd1)
    code, events = train(cfg)
    assert_completed(code, events)
    assert len(losses(events)) == STOP_TOTAL
    return losses(events)


@pytest.mark.parametrize("how", ["stop_file", "SIGTERM", "SIGINT"])
def test_stop_then_resume_continues_the_same_run(tmp_path, tiny_sd1, uninterrupted_losses, how):
    cfg = stop_config(tmp_path, tiny_sd1)
    out = Path(cfg.output_dir)
    proc = start_engine(cfg, tmp_path)
    try:
        wait_for_step(proc, cfg, 2)
        t0 = time.monotonic()
        if how == "stop_file":
            (out / "tiny.stop").touch()
        else:
            proc.send_signal(getattr(signal, how))
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    elapsed = time.monotonic() - t0
    assert code == 0, (tmp_path / "engine.log").read_text()[-3000:]
    assert elapsed < 30, f"the engine took {elapsed:.1f} s to stop"

    events = read_run_events(cfg)
    done, steps = events[-1], of_type(events, "step")
    assert done["type"] == "done" and done["status"] == "stopped", done
    stopped_at = steps[-1]["step"]
    assert 2 <= stopped_at < STOP_TOTAL and done["steps_done"] == stopped_at
    assert [s["step"] for s in steps] == list(range(1, stopped_at + 1))  # the current step was finished
    stopped, state = out / "tiny-stopped.safetensors", out / "tiny-stopped-state"
    saved = {(e["kind"], e["path"]) for e in of_type(events, "saved")}
    assert {("stopped", str(stopped)), ("state", str(state))} <= saved
    assert file_metadata(stopped)["ss_steps"] == str(stopped_at)
    assert json.loads((state / "train_state.json").read_text())["global_step"] == stopped_at
    assert not (out / "tiny.safetensors").exists()
    assert losses(events) == pytest.approx(uninterrupted_losses[:stopped_at], **LOSS_TOL)

    # Resume from the state folder: the rest of the run is the uninterrupted run's rest.
    (out / "tiny.stop").unlink(missing_ok=True)
    code, resumed = train(cfg.replace(resume=str(state)))
    assert_completed(code, resumed)
    assert one(resumed, "start")["resumed_from_step"] == stopped_at
    assert [s["step"] for s in of_type(resumed, "step")] == list(range(stopped_at + 1, STOP_TOTAL + 1))
    assert losses(resumed) == pytest.approx(uninterrupted_losses[stopped_at:], **LOSS_TOL)
    assert (out / "tiny.safetensors").is_file()
    assert file_metadata(out / "tiny.safetensors")["ss_steps"] == str(STOP_TOTAL)
    for epoch in (1, 2):
        assert (out / f"tiny-{epoch:06d}.safetensors").is_file()


def _stop_at(cfg: TrainConfig, tmp_path: Path, step: int) -> None:
    """Start the engine, stop it with the stop file once it reached `step`, wait for it to end."""
    proc = start_engine(cfg, tmp_path)
    try:
        wait_for_step(proc, cfg, step)
        (Path(cfg.output_dir) / f"{cfg.output_name}.stop").touch()
        assert proc.wait(timeout=120) == 0, (tmp_path / "engine.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    (Path(cfg.output_dir) / f"{cfg.output_name}.stop").unlink(missing_ok=True)


def test_a_resumed_run_stopped_again_keeps_the_first_stops_files(tmp_path, tiny_sd1):
    from trainer.resumable import find_resumable_states

    cfg = stop_config(tmp_path, tiny_sd1)
    out = Path(cfg.output_dir)
    _stop_at(cfg, tmp_path, 2)
    first, first_state = out / "tiny-stopped.safetensors", out / "tiny-stopped-state"
    first_bytes, first_position = first.read_bytes(), (first_state / "train_state.json").read_text()
    first_step = json.loads(first_position)["global_step"]

    _stop_at(cfg.replace(resume=str(first_state)), tmp_path, first_step + 2)
    second, second_state = out / "tiny-stopped-2.safetensors", out / "tiny-stopped-2-state"
    assert first.read_bytes() == first_bytes and (first_state / "train_state.json").read_text() == first_position
    second_step = json.loads((second_state / "train_state.json").read_text())["global_step"]
    assert second_step >= first_step + 2 and file_metadata(second)["ss_steps"] == str(second_step)
    states = {(s.path.name, s.kind, s.step) for s in find_resumable_states(out)}
    assert {("tiny-stopped-state", "stopped", first_step), ("tiny-stopped-2-state", "stopped", second_step)} <= states

    # the second stop resumes to the end, under the same name
    code, resumed = train(cfg.replace(resume=str(second_state)))
    assert_completed(code, resumed)
    assert one(resumed, "start")["resumed_from_step"] == second_step
    assert file_metadata(out / "tiny.safetensors")["ss_steps"] == str(STOP_TOTAL)


# ---- 6. a diverging run fails cleanly and keeps the last good save ------------------------------------
def test_diverging_run_reports_nan_and_keeps_last_good_save(tmp_path, tiny_sd1):
    """AdamW at LR 10 without gradient clipping: the weights blow up within ~10 steps. Measured: the
    loss stays near 1 until step 7-8, whose optimizer step turns the weights into NaN (a finite loss
    with inf gradients), so the run must stop there, before saving them: a save every step checks it."""
    from trainer.network.kohya_format import read_lora_file

    cfg = make_run_config(tmp_path, tiny_sd1, make_images(tmp_path / "img", "1_sks disc", 1), learning_rate=10.0,
                          max_grad_norm=0.0, save_every_n_steps=1, max_train_steps=30, save_every_n_epochs=0)
    proc, events = run_engine(cfg, tmp_path)
    assert proc.returncode != 0
    error = one(events, "error")
    assert error["code"] == "nan_loss" and error["field"] == "learning_rate"
    assert "learning rate" in error["hint"].lower() and "fp16" in error["hint"]
    done = events[-1]
    assert done["type"] == "done" and done["status"] == "failed"
    steps = of_type(events, "step")
    assert all(math.isfinite(s["loss"]) for s in steps)
    last_good = steps[-1]["step"] if steps else 0
    assert 2 <= last_good < 30 and done["steps_done"] == last_good
    assert f"step {last_good + 1}" in error["message"]

    out = Path(cfg.output_dir)
    saved = of_type(events, "saved")
    assert saved and all(s["kind"] == "step" and s["step"] <= last_good for s in saved)
    written = sorted(p.name for p in out.glob("*.safetensors"))
    assert written == sorted(Path(s["path"]).name for s in saved)  # nothing written after the NaN
    assert not (out / "tiny.safetensors").exists()
    assert all(p.stat().st_mtime <= error["time"] + 0.01 for p in out.glob("*.safetensors"))
    last = Path(saved[-1]["path"])
    assert done["files"] == [s["path"] for s in saved]
    lora = read_lora_file(last)
    assert lora.modules and all(torch.isfinite(t).all() for m in lora.modules.values() for t in (m.down, m.up))


# ---- 7. validation errors reach the stream; outputs are never overwritten ----------------------------
def test_loose_image_folder_fails_validation_in_the_stream(tmp_path, tiny_sd1):
    loose = tmp_path / "loose"
    make_image_folder(loose, 2, caption="disc")
    cfg = make_run_config(tmp_path, tiny_sd1, loose)
    proc, events = run_engine(cfg, tmp_path)
    assert proc.returncode == 1
    errors = of_type(events, "error")
    assert [e["field"] for e in errors] == ["train_data_dir"] and errors[0]["code"] == "dir_holds_images"
    assert str(tmp_path) in errors[0]["message"]  # names the folder above as the right choice
    assert events[-1]["type"] == "done" and events[-1]["status"] == "failed" and events[-1]["steps_done"] == 0
    assert not of_type(events, "start") and not of_type(events, "step")
    out = Path(cfg.output_dir)
    assert sorted(p.name for p in out.iterdir()) == ["tiny.events.jsonl"]


def test_existing_output_file_is_never_overwritten(tmp_path, tiny_sd1):
    train_dir = make_images(tmp_path / "img", "1_sks disc", 1)
    cfg = make_run_config(tmp_path, tiny_sd1, train_dir, max_train_steps=2, save_every_n_epochs=0)
    out = Path(cfg.output_dir)
    out.mkdir()
    final = out / "tiny.safetensors"
    final.write_bytes(b"an earlier run's LoRA")
    proc, events = run_engine(cfg, tmp_path)
    assert proc.returncode == 1
    error = one(events, "error")
    assert (error["code"], error["field"]) == ("output_exists", "output_name")
    assert events[-1]["status"] == "failed" and not of_type(events, "step")
    assert final.read_bytes() == b"an earlier run's LoRA"


def test_output_file_appearing_during_the_run_is_not_overwritten(tmp_path, tiny_sd1):
    """Validation passed, then another program wrote the final file while training ran."""
    train_dir = make_images(tmp_path / "img", "1_sks disc", 1)
    cfg = make_run_config(tmp_path, tiny_sd1, train_dir, max_train_steps=2, save_every_n_epochs=0)
    final = Path(cfg.output_dir) / "tiny.safetensors"

    class Intruder(EventWriter):
        def emit(self, type, **fields):
            if type == "start":
                final.write_bytes(b"someone else's file")
            return super().emit(type, **fields)

    code, events = train(cfg, writer=Intruder)
    assert code == 1
    assert len(of_type(events, "step")) == 2
    error = one(events, "error")
    assert (error["code"], error["field"]) == ("output_exists", "output_name"), error
    assert events[-1]["status"] == "failed"
    assert final.read_bytes() == b"someone else's file"


# ---- 8. samples do not change the training -----------------------------------------------------------
def test_sampling_writes_images_and_leaves_training_unchanged(tmp_path, tiny_sd1):
    from PIL import Image

    train_dir = make_images(tmp_path / "img", "1_sks disc", 2)
    base = dict(max_train_steps=4, save_every_n_epochs=0)
    plain = make_run_config(tmp_path / "plain", tiny_sd1, train_dir, **base)
    sampled = make_run_config(tmp_path / "sampled", tiny_sd1, train_dir, sample_at_first=True,
                              sample_every_n_steps=2, sample_sampler="euler_a",
                              sample_prompts="sks disc, red circle --w 64 --h 64 --s 2 --d 7\n"
                                             "a red circle --n blue --w 64 --h 64 --s 2 --l 5 --d 8", **base)
    code, plain_events = train(plain)
    assert_completed(code, plain_events)
    code, events = train(sampled)
    assert_completed(code, events)

    samples = of_type(events, "sample")
    assert [s["step"] for s in samples] == [0, 2, 4]
    assert all(s["prompts"] == ["sks disc, red circle", "a red circle"] for s in samples)
    paths = [Path(p) for s in samples for p in s["paths"]]
    assert len(paths) == 6 and len(set(paths)) == 6
    sample_dir = Path(sampled.output_dir) / "sample"
    assert sorted(sample_dir.glob("*.png")) == sorted(paths)
    for p in paths:
        with Image.open(p) as im:
            assert im.size == (64, 64)
    assert not (Path(plain.output_dir) / "sample").exists()
    # Sampling restores the RNG streams: the training is bit-identical.
    assert losses(events) == losses(plain_events)


# ---- 9. network_weights continues from a saved LoRA --------------------------------------------------
def test_network_weights_starts_from_the_file(tmp_path, trained_sd1):
    from trainer.network.kohya_format import read_lora_file
    from trainer.train import StopSignal, build_run, preflight
    from trainer.training.accel import make_accelerator

    source_cfg, source = trained_sd1
    train_dir = Path(source_cfg.train_data_dir)
    cfg = make_run_config(tmp_path, Path(source_cfg.pretrained_model_name_or_path), train_dir,
                          network_weights=str(source), max_train_steps=2, save_every_n_epochs=0)

    # After setup the network holds exactly the file's weights.
    out = Path(cfg.output_dir)
    out.mkdir()
    with EventWriter(out / "setup.events.jsonl") as ev:
        accelerator, precision = make_accelerator(cfg)
        run, _writer = build_run(cfg, preflight(cfg)[0], accelerator=accelerator, precision=precision, events=ev,
                                 stop=StopSignal(None, install_handlers=False))
    want = read_lora_file(source).modules
    have = run.network.to_lora_file().modules
    assert set(have) == set(want)
    for name, m in want.items():
        assert torch.equal(have[name].down, m.down) and torch.equal(have[name].up, m.up), name
        assert have[name].alpha == m.alpha
    # The loss of the first batch with these weights, as the run's first step computes it.
    with torch.no_grad():
        batch = next(run.batches.iterate(0, start=0))
        expected_first = (run.objective(batch) / batch.size).item()
    del run

    code, events = train(cfg)
    assert_completed(code, events)
    assert any("network weights" in e["message"] and "0 missing, 0 unexpected" in e["message"]
               for e in of_type(events, "log"))
    assert losses(events)[0] == pytest.approx(expected_first, **LOSS_TOL)
    assert file_metadata(out / "tiny.safetensors")["ss_steps"] == "2"


def test_network_weights_of_another_rank_is_a_field_error(tmp_path, trained_sd1):
    source_cfg, source = trained_sd1
    cfg = make_run_config(tmp_path, Path(source_cfg.pretrained_model_name_or_path),
                          Path(source_cfg.train_data_dir), network_weights=str(source), network_dim=8,
                          max_train_steps=1)
    code, events = train(cfg)
    assert code == 1
    error = one(events, "error")
    assert (error["code"], error["field"]) == ("network_weights_mismatch", "network_weights")
    assert not of_type(events, "step") and events[-1]["status"] == "failed"


# ---- 10. latent caching: memory, none, disk (written, then reused) -----------------------------------
def test_latent_cache_modes_give_the_same_training(tmp_path, tiny_sd1):
    train_dir = make_images(tmp_path / "img", "1_sks disc", 3)
    image_dir = train_dir / "1_sks disc"
    base = dict(max_train_steps=3, save_every_n_epochs=0)

    def run(name: str, **kw) -> list[dict]:
        cfg = make_run_config(tmp_path / name, tiny_sd1, train_dir, **base, **kw)
        code, events = train(cfg)
        assert_completed(code, events)
        return events

    memory = run("memory", cache_latents=True)
    assert not list(image_dir.glob("*.npz"))
    none = run("none", cache_latents=False)
    assert not any("caching latents" in e["message"] for e in of_type(none, "log"))

    disk = run("disk", cache_latents=True, cache_latents_to_disk=True)
    npz = sorted(image_dir.glob("*.npz"))
    assert [p.name for p in npz] == [f"img_{i:03d}_0064x0064_sd.npz" for i in range(3)]
    mtimes = {p: p.stat().st_mtime_ns for p in npz}
    import numpy as np

    with np.load(npz[0]) as f:
        assert f["latents"].shape == (4, 8, 8)
        key = json.loads(str(f["lora_gui_key"]))
        assert key["latent_scale"] == pytest.approx(0.18215)  # the family's scale is part of the key

    again = run("again", cache_latents=True, cache_latents_to_disk=True)
    assert {p: p.stat().st_mtime_ns for p in image_dir.glob("*.npz")} == mtimes  # reused, not rewritten
    assert any("3 reused from disk" in e["message"] for e in of_type(again, "log")), of_type(again, "log")
    assert any("0 reused from disk" in e["message"] for e in of_type(disk, "log")), of_type(disk, "log")

    reference = losses(memory)
    for label, events in (("disk", disk), ("disk reused", again), ("no cache", none)):
        assert losses(events) == pytest.approx(reference, **LOSS_TOL), label


def test_each_warning_is_reported_once(tmp_path, tiny_sd1):
    """A CPU run with fp16 (the default) is warned once that it trains in fp32, through the CLI."""
    cfg = make_run_config(tmp_path, tiny_sd1, make_images(tmp_path / "img", count=1), mixed_precision="fp16",
                          max_train_epochs=1, save_every_n_epochs=0)
    proc, events = run_engine(cfg, tmp_path)
    assert_completed(proc.returncode, events)
    codes = [e.get("code") for e in events if e["type"] == "warning"]
    assert codes.count("precision_cpu") == 1, codes
    assert len(codes) == len(set(codes)), codes


def test_torch_compile_trains_the_same_lora(tmp_path, tiny_sd1):
    """torch_compile (aot_eager: dynamo's graph capture and autograd, without generated kernels) trains what the
    uncompiled UNet trains, and the file has the same keys."""
    data = make_images(tmp_path / "img", count=2)
    runs = {}
    for compiled in (False, True):
        cfg = make_run_config(tmp_path / str(compiled), tiny_sd1, data, max_train_epochs=1, save_every_n_epochs=0,
                              torch_compile=compiled, dynamo_backend="aot_eager")
        code, events = train(cfg)
        assert_completed(code, events)
        assert any("torch.compile" in e["message"] for e in of_type(events, "log")) == compiled
        runs[compiled] = (losses(events), file_tensors(Path(cfg.output_dir) / "tiny.safetensors"))
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-4, abs=1e-5)
    assert runs[True][1].keys() == runs[False][1].keys()


def test_fp8_base_stores_the_frozen_model_in_fp8_and_trains_the_lora(tmp_path, tiny_sd1):
    """fp8_base (a weight parametrization, computed in fp32 on the CPU; with gradient checkpointing, where it
    saves memory): the frozen layers are stored in float8_e4m3fn, the LoRA is not, and the run learns about
    what the full-precision run learns."""
    data = make_images(tmp_path / "img", count=2)
    runs = {}
    for fp8 in (False, True):
        cfg = make_run_config(tmp_path / str(fp8), tiny_sd1, data, max_train_epochs=3, save_every_n_epochs=0,
                              fp8_base=fp8, gradient_checkpointing=True)
        code, events = train(cfg)
        assert_completed(code, events)
        runs[fp8] = (losses(events), file_tensors(Path(cfg.output_dir) / "tiny.safetensors"), events)
    notes = [e["message"] for e in of_type(runs[True][2], "log") if e["message"].startswith("fp8 base")]
    assert len(notes) == 1 and int(notes[0].split()[2]) > 50, notes  # the tiny SD1 UNet + CLIP have ~100
    assert all(t.dtype == torch.float32 for t in runs[True][1].values())  # the LoRA trains in its own dtype
    assert runs[True][1].keys() == runs[False][1].keys()
    fp8_losses, full_losses = runs[True][0], runs[False][0]
    assert all(math.isfinite(x) for x in fp8_losses)
    assert fp8_losses != full_losses  # the base really computes from fp8-rounded weights
    assert sum(fp8_losses) == pytest.approx(sum(full_losses), rel=0.1)
