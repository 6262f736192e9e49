"""Several processes on the CPU (accelerate's multi-CPU mode, gloo): `python -m trainer --config run.json`
with num_processes 2 relaunches itself through accelerate's launcher. Two processes with batch 1 each
train exactly what one process with batch 2 trains; one stream and one set of files are written; a stop
stops both; resume continues; and the DataLoader's workers load exactly the batches of the main process."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import make_run_config
from trainer.events import EventReader, EventWriter, events_path, read_events
from trainer.tiny import make_image_folder

ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT = 600
# A batch of 2 and two batches of 1 sum the same numbers in another order (fp32 rounding); AdamW divides each
# gradient entry by its own running size, so an entry whose gradient is ~0 can move by a visible fraction of
# the learning rate (1e-3) either way. Measured: at most 5e-5 after 12 steps; a real difference is >= 1e-3.
LORA_TOL = 2e-4


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two processes on a 2-core machine


def images(root: Path, count: int) -> Path:
    make_image_folder(root / "1_sks disc", count, caption="sks disc, red circle")
    return root


def start_engine(cfg, folder: Path) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    run_json = folder / f"{cfg.output_name}-run.json"
    cfg.save(run_json)
    return subprocess.Popen([sys.executable, "-m", "trainer", "--config", str(run_json), "--quiet"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_engine(cfg, folder: Path) -> tuple[int, list[dict], str]:
    reader = EventReader(events_path(cfg.output_dir, cfg.output_name))
    reader.poll()  # only this run's events
    proc = start_engine(cfg, folder)
    output, _ = proc.communicate(timeout=RUN_TIMEOUT)
    return proc.returncode, reader.poll(), output


def losses(events: list[dict]) -> list[float]:
    return [e["loss"] for e in events if e["type"] == "step"]


def of_type(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["type"] == kind]


def assert_same_lora(a: Path, b: Path) -> None:
    first, second = load_file(str(a)), load_file(str(b))
    assert set(first) == set(second)
    for key in first:
        assert (first[key] - second[key]).abs().max().item() < LORA_TOL, key


@pytest.mark.parametrize("count", [4, 3], ids=["even", "uneven"])  # 3 images: one process gets none of a batch
def test_two_processes_train_what_one_process_with_twice_the_batch_trains(tmp_path, tiny_sd1, count):
    data = images(tmp_path / "img", count)
    one = make_run_config(tmp_path / "one", tiny_sd1, data, train_batch_size=2, max_train_epochs=3)
    two = make_run_config(tmp_path / "two", tiny_sd1, data, train_batch_size=1, num_processes=2, max_train_epochs=3)
    code1, events1, out1 = run_engine(one, tmp_path / "one")
    code2, events2, out2 = run_engine(two, tmp_path / "two")
    assert code1 == 0, out1
    assert code2 == 0, out2
    assert len(losses(events2)) == of_type(events2, "start")[0]["total_steps"] == len(losses(events1))
    assert losses(events2) == pytest.approx(losses(events1), rel=1e-5, abs=1e-6)
    # one stream: one start, one done, each save reported once; the files of one run
    assert [e["type"] for e in events2].count("start") == 1 and [e["type"] for e in events2].count("done") == 1
    saved = [e["path"] for e in of_type(events2, "saved")]
    assert len(saved) == len(set(saved)) == 3  # epochs 1, 2 and the final LoRA
    names = sorted(p.name for p in Path(two.output_dir).iterdir())
    assert names == sorted(p.name for p in Path(one.output_dir).iterdir())
    assert_same_lora(Path(one.output_dir) / "tiny.safetensors", Path(two.output_dir) / "tiny.safetensors")
    meta = _metadata(Path(two.output_dir) / "tiny.safetensors")
    assert (meta["ss_batch_size_per_device"], meta["ss_total_batch_size"]) == ("1", "2")


def test_a_stop_stops_both_processes_and_resume_on_two_continues(tmp_path, tiny_sd1):
    data = images(tmp_path / "img", 4)
    cfg = make_run_config(tmp_path / "run", tiny_sd1, data, train_batch_size=1, num_processes=2,
                          max_train_epochs=40, save_every_n_epochs=0)
    whole = make_run_config(tmp_path / "whole", tiny_sd1, data, train_batch_size=1, num_processes=2,
                            max_train_epochs=40, save_every_n_epochs=0)
    out = Path(cfg.output_dir)
    proc = start_engine(cfg, tmp_path / "run")
    stream = events_path(out, "tiny")
    deadline = time.time() + RUN_TIMEOUT
    while time.time() < deadline and len(of_type(read_events(stream), "step")) < 3:
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.2)
    (out / "tiny.stop").touch()
    output, _ = proc.communicate(timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, output
    events = read_events(stream)
    done = events[-1]
    assert done["type"] == "done" and done["status"] == "stopped", output
    assert [e["kind"] for e in of_type(events, "saved")] == ["stopped", "state"]
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["tiny-stopped.safetensors"]
    stopped_at = done["steps_done"]
    assert 3 <= stopped_at < of_type(events, "start")[0]["total_steps"]

    (out / "tiny.stop").unlink()
    code, resumed, output = run_engine(cfg.replace(resume=str(out / "tiny-stopped-state"), max_train_epochs=40),
                                       tmp_path / "run")
    assert code == 0, output
    assert of_type(resumed, "start")[0]["resumed_from_step"] == stopped_at
    code, uninterrupted, output = run_engine(whole, tmp_path / "whole")
    assert code == 0, output
    assert losses(resumed) == pytest.approx(losses(uninterrupted)[stopped_at:], rel=1e-5, abs=1e-6)
    assert_same_lora(out / "tiny.safetensors", Path(whole.output_dir) / "tiny.safetensors")

    # the state of two processes cannot be resumed on one: a step's batches would differ
    # (under another name: the resumed run's final file is there now and is never overwritten)
    code, refused, output = run_engine(cfg.replace(resume=str(out / "tiny-stopped-state"), num_processes=1,
                                                   train_batch_size=1, output_name="on_one"), tmp_path / "run")
    assert code == 1
    error = of_type(refused, "error")[0]
    assert (error["code"], error["field"]) == ("resume_processes_mismatch", "num_processes")
    assert "2 process" in error["message"]


def test_ctrl_c_stops_every_process_and_the_engine_exits_as_one_would(tmp_path, tiny_sd1):
    """SIGINT to `python -m trainer` (the page's Stop, Ctrl-C) reaches the launched processes; the stop is
    saved once and the exit code is 0 as for one process (the launcher itself exits 130)."""
    cfg = make_run_config(tmp_path, tiny_sd1, images(tmp_path / "img", 4), train_batch_size=1, num_processes=2,
                          max_train_epochs=40, save_every_n_epochs=0)
    proc = start_engine(cfg, tmp_path)
    stream = events_path(cfg.output_dir, "tiny")
    deadline = time.time() + RUN_TIMEOUT
    while time.time() < deadline and len(of_type(read_events(stream), "step")) < 2:
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, output
    events = read_events(stream)
    assert events[-1]["type"] == "done" and events[-1]["status"] == "stopped", output
    assert [e["kind"] for e in of_type(events, "saved")] == ["stopped", "state"]


def test_dataloader_workers_load_exactly_the_batches_of_the_main_process(tmp_path, tiny_sd1):
    """No latent cache (images are loaded per batch, with flips and caption shuffling seeded per sample)."""
    from trainer.train import StopSignal, run_training

    data = images(tmp_path / "img", 4)
    runs = {}
    for workers in (0, 2):
        cfg = make_run_config(tmp_path / f"w{workers}", tiny_sd1, data, cache_latents=False, flip_aug=True,
                              shuffle_caption=True, max_data_loader_n_workers=workers,
                              persistent_data_loader_workers=workers > 0, max_train_epochs=2, save_every_n_epochs=0)
        path = events_path(cfg.output_dir, cfg.output_name)
        with EventWriter(path) as events:
            assert run_training(cfg, events=events, stop=StopSignal(None, install_handlers=False)) == 0
        runs[workers] = losses(read_events(path))
    assert len(runs[0]) == 8 and runs[2] == runs[0]


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata()
