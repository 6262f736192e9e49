"""TensorBoard: the engine's logs read back with TensorBoard's own reader, and the page's server on loopback."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from conftest import make_run_config
from trainer.events import EventWriter, events_path, read_events
from trainer.tiny import make_image_folder


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_the_engine_writes_tensorboard_logs_equal_to_its_events(tmp_path, tiny_sd1):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from trainer.train import StopSignal, run_training

    make_image_folder(tmp_path / "img" / "2_sks disc", 3, caption="sks disc")
    cfg = make_run_config(tmp_path, tiny_sd1, tmp_path / "img", logging_dir=str(tmp_path / "logs"),
                          sample_prompts="a red circle --w 64 --h 64 --s 2", sample_every_n_epochs=1)
    path = events_path(cfg.output_dir, cfg.output_name)
    with EventWriter(path) as events:
        assert run_training(cfg, events=events, stop=StopSignal(None, install_handlers=False)) == 0
    stream = read_events(path)
    runs = list((tmp_path / "logs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("tiny_") and len(runs[0].name) == len("tiny_20261207120000")
    logs = EventAccumulator(str(runs[0]), size_guidance={"scalars": 0, "images": 0}).Reload()
    tags = logs.Tags()
    assert {"loss/current", "loss/average", "lr/unet", "lr/textencoder", "time/sec_per_step"} <= set(tags["scalars"])
    steps = [e for e in stream if e["type"] == "step"]
    assert [s.step for s in logs.Scalars("loss/current")] == [e["step"] for e in steps] == list(range(1, 13))
    assert [s.value for s in logs.Scalars("loss/current")] == pytest.approx([e["loss"] for e in steps], rel=1e-6)
    assert [s.value for s in logs.Scalars("loss/average")] == pytest.approx([e["avg_loss"] for e in steps], rel=1e-6)
    assert [s.value for s in logs.Scalars("lr/unet")] == pytest.approx([e["lr"] for e in steps])
    samples = [e for e in stream if e["type"] == "sample"]
    assert [i.step for i in logs.Images("samples/00")] == [e["step"] for e in samples] == [6, 12]
    assert all((i.width, i.height) == (64, 64) for i in logs.Images("samples/00"))


def test_the_page_starts_a_tensorboard_server_on_loopback(tmp_path):
    from lora_gui.tensorboard_server import TensorBoardError, TensorBoardServer

    server = TensorBoardServer()
    try:
        url = server.open(str(tmp_path / "logs"))
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url, timeout=30) as answer:
            assert answer.status == 200 and b"TensorBoard" in answer.read()
        assert server.open(str(tmp_path / "logs")) == url  # the same folder: the same server
        proc = server.proc
    finally:
        server.stop()
    assert proc.poll() is not None  # stopped with the app
    with pytest.raises(TensorBoardError) as refused:
        server.open("  ")
    assert refused.value.key == "tensorboard.no_folder"
