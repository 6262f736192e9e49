"""What a killed run leaves (hidden temporary files and state folders) is removed by the next run or tool,
and nothing else ever is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import make_run_config, run_engine
from trainer.fileio import PROCESS_STARTED, remove_stale_temp_files

REPO = Path(__file__).resolve().parent.parent


def _age(path: Path, seconds: float = 3600) -> Path:
    old = PROCESS_STARTED - seconds
    os.utime(path, (old, old))
    return path


def _killed_while_writing(folder: Path, name: str) -> Path:
    """Start a process that is writing `folder/name` through atomic_path, kill -9 it, return its leftover."""
    code = ("import sys, time\nfrom pathlib import Path\nfrom trainer.fileio import atomic_path\n"
            f"with atomic_path(Path({str(folder / name)!r})) as tmp:\n"
            "    print(tmp, flush=True)\n    time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    leftover = Path(proc.stdout.readline().strip())
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert leftover.is_file() and leftover.stat().st_size == 0 and leftover.name.startswith(f".{name}.")
    return leftover


def test_only_our_own_stale_temporary_names_are_removed(tmp_path):
    stale_file = tmp_path / ".tiny.safetensors.k2j4h5g6.tmp"
    stale_file.touch()
    _age(stale_file)
    stale_state = tmp_path / ".tiny-000001-state.ab_c12de"
    stale_state.mkdir()
    (stale_state / "optimizer.safetensors").write_bytes(b"x")
    _age(stale_state / "optimizer.safetensors")
    _age(stale_state)
    kept = {
        "fresh": tmp_path / ".tiny.json.abcd1234.tmp",  # newer than this process: may be another run's
        "user file": tmp_path / "notes.tmp",
        "no random part": tmp_path / ".tiny.safetensors.tmp",
        "not tempfile's letters": tmp_path / ".tiny.safetensors.ABCD1234.tmp",
        "random part too long": tmp_path / ".tiny.safetensors.abcd12345.tmp",
        "not hidden": tmp_path / "tiny.safetensors.abcd1234.tmp",
        "a file named like a state folder": tmp_path / ".tiny-state.abcd1234",
        "previous state": tmp_path / "tiny-state.old",
        "held open": tmp_path / ".held.safetensors.zz99yy88.tmp",
    }
    for name, path in kept.items():
        path.write_text(name)
        if name != "fresh":
            _age(path)
    other_dir = tmp_path / ".photos.abcd1234"  # a folder of our temp-file shape but not "-state"
    other_dir.mkdir()
    _age(other_dir)
    nested = tmp_path / "sub"
    nested.mkdir()
    below = nested / ".tiny.safetensors.abcd1234.tmp"
    below.touch()
    _age(below)
    link = tmp_path / ".link.safetensors.abcd1234.tmp"
    link.symlink_to(tmp_path / "notes.tmp")

    with open(kept["held open"], "rb"):
        removed = remove_stale_temp_files(tmp_path)
    assert sorted(removed) == sorted([stale_file, stale_state])
    assert not stale_file.exists() and not stale_state.exists()
    for name, path in kept.items():
        assert path.read_text() == name, name
    assert other_dir.is_dir() and below.exists() and link.is_symlink()
    assert remove_stale_temp_files(tmp_path / "missing") == []


def test_a_file_held_by_another_live_process_is_kept(tmp_path):
    held = tmp_path / ".lora.safetensors.abcd1234.tmp"
    held.write_bytes(b"")
    _age(held)
    holder = subprocess.Popen([sys.executable, "-c", f"f = open({str(held)!r}); print('open', flush=True); "
                               "import time; time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        assert remove_stale_temp_files(tmp_path) == [] and held.exists()
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert remove_stale_temp_files(tmp_path) == [held] and not held.exists()


def test_next_run_removes_what_a_killed_engine_left(tmp_path, tiny_sd1, image_root):
    cfg = make_run_config(tmp_path, tiny_sd1, image_root, max_train_steps=1, save_every_n_epochs=0)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True)
    leftover = _killed_while_writing(out, "tiny.safetensors")
    time.sleep(0.05)  # the next run starts after the killed one wrote
    mine = out / "my notes.txt"
    mine.write_text("keep me")
    proc, events = run_engine(cfg, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not leftover.exists() and mine.read_text() == "keep me"
    logs = [e["message"] for e in events if e["type"] == "log" and "temporary file" in e["message"]]
    assert len(logs) == 1 and leftover.name in logs[0]
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_tools_remove_what_a_killed_run_left_beside_their_output(tmp_path):
    from trainer.network.kohya_format import write_lora_file
    from trainer.tools.synthetic import random_lora, sd15_module_shapes

    source = tmp_path / "in.safetensors"
    write_lora_file(source, random_lora(dict(list(sd15_module_shapes(conv=False).items())[:2]), 4, 2.0))
    leftover = _killed_while_writing(tmp_path, "small.safetensors")
    proc = subprocess.run([sys.executable, "-m", "trainer.tools", "resize", "--model", str(source), "--new_rank", "2",
                           "--save_to", str(tmp_path / "small.safetensors")], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not leftover.exists() and leftover.name in proc.stderr
    assert (tmp_path / "small.safetensors").is_file()
