"""A full disk during a save, for real: the output folder is a small tmpfs filled up to a chosen free space.

RLIMIT_FSIZE would raise EFBIG, not ENOSPC, so it is no stand-in. Mounting needs root (CAP_SYS_ADMIN);
where it is refused the tests skip and say why.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from tests.conftest import make_run_config
from trainer.events import EventReader, EventWriter, events_path

KEEP_FREE = 100 * 1024  # the tiny LoRA file is ~196 KB: with this much free its save fails, events still fit


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs at tmp_path/out, and a function that fills it up to KEEP_FREE bytes free."""
    mount_point = tmp_path / "out"
    mount_point.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs for a real full disk here: {proc.stderr.strip() or proc.returncode}")
    filler = mount_point / "filler.bin"

    def fill() -> Path:
        st = os.statvfs(mount_point)
        filler.write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - KEEP_FREE))
        return filler

    try:
        yield mount_point, fill
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _writer_reacting_to_disk_full(action):
    """An event writer that calls `action(event)` after it has written a `disk_full` warning."""

    class Writer(EventWriter):
        def emit(self, type, **fields):
            event = super().emit(type, **fields)
            if type == "warning" and fields.get("code") == "disk_full":
                action(event)
            return event

    return Writer


def _train(cfg, writer_class):
    from trainer.train import StopSignal, run_training

    path = events_path(cfg.output_dir, cfg.output_name)
    reader = EventReader(path)
    stop = StopSignal(Path(cfg.output_dir) / f"{cfg.output_name}.stop", install_handlers=False)
    with writer_class(path) as events:
        code = run_training(cfg, events=events, stop=stop)
    return code, reader.poll()


def _no_temporary_files(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def _images(tmp_path: Path) -> Path:
    from trainer.tiny import make_image_folder

    make_image_folder(tmp_path / "img" / "2_sks disc", 2, caption="sks disc")
    return tmp_path / "img"


def test_full_disk_skips_a_periodic_save_and_training_goes_on(tmp_path, tiny_sd1, small_disk):
    out, fill = small_disk
    cfg = make_run_config(tmp_path, tiny_sd1, _images(tmp_path), output_dir=str(out), max_train_epochs=3,
                          save_every_n_epochs=1)
    filler = fill()
    code, events = _train(cfg, _writer_reacting_to_disk_full(lambda event: filler.unlink()))
    assert code == 0 and events[-1]["status"] == "completed", events[-3:]
    warnings = [e for e in events if e["type"] == "warning" and e["code"] == "disk_full"]
    assert len(warnings) == 1, warnings
    params = warnings[0]["params"]
    assert params["folder"] == str(out) and params["previous_save_intact"] and params["previous_save"] is None
    assert params["bytes_needed"] >= 196_000 > params["bytes_free"]
    assert str(out) in warnings[0]["message"] and "tiny-000001.safetensors" in warnings[0]["message"]
    assert "next save tries again" in warnings[0]["message"]
    assert not (out / "tiny-000001.safetensors").exists()
    assert (out / "tiny-000002.safetensors").is_file() and (out / "tiny.safetensors").is_file()
    assert len([e for e in events if e["type"] == "step"]) == events[-1]["steps_done"] == 12
    assert _no_temporary_files(out) == []


def test_full_disk_at_the_final_save_waits_until_there_is_room(tmp_path, tiny_sd1, small_disk, monkeypatch):
    import trainer.training.disk_full as disk_full
    from trainer.network.kohya_format import read_lora_file

    monkeypatch.setattr(disk_full, "RETRY_SECONDS", 0.5)
    out, fill = small_disk
    cfg = make_run_config(tmp_path, tiny_sd1, _images(tmp_path), output_dir=str(out), max_train_epochs=1,
                          save_every_n_epochs=0, save_state=True)
    filler = fill()
    # the user frees space a little later, while the engine waits
    code, events = _train(cfg, _writer_reacting_to_disk_full(lambda event: threading.Timer(1.0, filler.unlink).start()))
    assert code == 0 and events[-1]["status"] == "completed", events[-3:]
    warning = next(e for e in events if e["type"] == "warning" and e["code"] == "disk_full")
    assert "kept in memory" in warning["message"] and "tried again every 0.5 s" in warning["message"]
    assert any(e["type"] == "log" and "had room again" in e["message"] for e in events)
    saved = {e["kind"]: e["path"] for e in events if e["type"] == "saved"}
    assert saved == {"final": str(out / "tiny.safetensors"), "state": str(out / "tiny-state")}
    assert read_lora_file(out / "tiny.safetensors").metadata["ss_steps"] == "4"
    assert (out / "tiny-state" / "optimizer.safetensors").is_file()
    assert _no_temporary_files(out) == []


def test_full_disk_at_the_final_save_then_stop_fails_with_the_reason(tmp_path, tiny_sd1, small_disk, monkeypatch):
    import trainer.training.disk_full as disk_full

    monkeypatch.setattr(disk_full, "RETRY_SECONDS", 30.0)  # the stop must end the wait, not the timer
    out, fill = small_disk
    cfg = make_run_config(tmp_path, tiny_sd1, _images(tmp_path), output_dir=str(out), max_train_epochs=2,
                          save_every_n_epochs=1)
    stop_file = out / "tiny.stop"

    def fill_after_first_save(type_, fields):
        if type_ == "saved" and fields["kind"] == "epoch":
            fill()

    class Writer(_writer_reacting_to_disk_full(lambda event: threading.Timer(0.5, stop_file.touch).start())):
        def emit(self, type, **fields):
            event = super().emit(type, **fields)
            fill_after_first_save(type, fields)
            return event

    code, events = _train(cfg, Writer)
    assert code == 1
    error = next(e for e in events if e["type"] == "error")
    assert (error["code"], error["field"]) == ("disk_full", "output_dir")
    previous = str(out / "tiny-000001.safetensors")
    assert str(out) in error["message"] and "tiny.safetensors was not saved" in error["message"]
    assert f"the previous save, {previous}, is intact" in error["message"]
    assert error["params"]["previous_save"] == previous and error["params"]["bytes_needed"] > error["params"]["bytes_free"]
    assert events[-1]["type"] == "done" and events[-1]["status"] == "failed" and events[-1]["files"] == [previous]
    assert not (out / "tiny.safetensors").exists() and (out / "tiny-000001.safetensors").stat().st_size > 196_000
    assert _no_temporary_files(out) == []


def test_event_lines_wait_for_room_instead_of_failing(small_disk):
    from trainer.events import read_events

    out, _ = small_disk
    writer = EventWriter(out / "run.events.jsonl")
    filler = out / "filler.bin"
    with open(filler, "wb") as fh:  # every last byte
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    for i in range(3):
        writer.emit("log", message=f"line {i} " + "x" * 3000)  # a full disk: kept in memory, no exception
    assert writer.unwritten_bytes > 0
    filler.unlink()
    writer.emit("log", message="after")
    writer.close()
    assert [e["message"][:6] for e in read_events(out / "run.events.jsonl")] == ["line 0", "line 1", "line 2", "after"]
