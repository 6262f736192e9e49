"""Every command-line failure is one message naming the file or field, never a bare traceback; nothing is
written outside the output folder; output names work on every OS; files get the user's permissions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.config import TrainConfig

REPO = Path(__file__).resolve().parent.parent


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def assert_one_message(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0, proc
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)


def write_config(path: Path, **values) -> Path:
    path.write_text(json.dumps({"format_version": 1, **values}), encoding="utf-8")
    return path


# ---- config files that cannot be read -------------------------------------------------------------------
def test_config_that_is_a_json_array(tmp_path):
    config = tmp_path / "run.json"
    config.write_text('[{"output_name": "x"}]', encoding="utf-8")
    assert_one_message(cli("trainer", "--config", str(config)), str(config), "array", "JSON object")


def test_config_in_shift_jis(tmp_path):
    config = tmp_path / "run.json"
    config.write_bytes('{"output_name": "テスト"}'.encode("shift_jis"))
    assert_one_message(cli("trainer", "--config", str(config)), str(config), "UTF-8", "Shift_JIS")


def test_config_that_is_missing_or_broken(tmp_path):
    assert_one_message(cli("trainer", "--config", str(tmp_path / "nope.json")), str(tmp_path / "nope.json"))
    broken = tmp_path / "broken.json"
    broken.write_text('{"output_name": }', encoding="utf-8")
    assert_one_message(cli("trainer", "--config", str(broken)), str(broken), "line 1")


# ---- output folders and names: refused before anything is written ----------------------------------------
def test_escaping_output_name_writes_nothing_anywhere(tmp_path):
    out = tmp_path / "a" / "b" / "out"
    (tmp_path / "a").mkdir()
    config = write_config(tmp_path / "a" / "run.json", output_dir=str(out), output_name="../../escaped_name")
    proc = cli("trainer", "--config", str(config))
    assert_one_message(proc, "output_name", "../../escaped_name")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["a", "a/run.json"]


def test_output_folder_that_is_a_file(tmp_path):
    blocker = tmp_path / "out"
    blocker.write_text("a file, not a folder")
    for out in (blocker, blocker / "sub"):
        config = write_config(tmp_path / "run.json", output_dir=str(out), output_name="x")
        assert_one_message(cli("trainer", "--config", str(config)), "output_dir", str(blocker))
    assert blocker.read_text() == "a file, not a folder"


def test_output_name_too_long(tmp_path):
    config = write_config(tmp_path / "run.json", output_dir=str(tmp_path / "out"), output_name="n" * 240)
    assert_one_message(cli("trainer", "--config", str(config)), "output_name", "too long", "at most 215")
    assert not (tmp_path / "out").exists()


def test_read_only_output_folder(tmp_path):
    """A read-only mount (root ignores file permissions, so chmod would prove nothing here)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        config = write_config(tmp_path / "run.json", output_dir=str(ro / "out"), output_name="x")
        assert_one_message(cli("trainer", "--config", str(config)), "output_dir", str(ro))
    finally:
        subprocess.run(["umount", str(ro)], check=True)


@pytest.mark.parametrize("name, code", [
    ("CON", "output_name_reserved"), ("nul", "output_name_reserved"), ("Com1.lora", "output_name_reserved"),
    ("LPT9", "output_name_reserved"), ("aux ", "output_name_trailing"), ("name.", "output_name_trailing"),
    ("name ", "output_name_trailing"), ("a" * 216, "output_name_too_long"), ("あ" * 72, "output_name_too_long"),
    ("a/b", "output_name_invalid"), ("a:b", "output_name_invalid"), ("..", "output_name_invalid"),
])
def test_output_names_that_fail_on_some_os_are_refused_everywhere(tmp_path, name, code):
    from trainer.slider import SliderSpec, validate_spec
    from trainer.validation import output_name_problem, output_path_issues

    issues = output_path_issues(TrainConfig(output_dir=str(tmp_path), output_name=name))
    assert [(i.code, i.field) for i in issues] == [(code, "output_name")]
    assert repr(name) in issues[0].message
    # the slider wizard uses the same rule (its paired method trains under this name)
    slider = [i for i in validate_spec(SliderSpec(output_dir=str(tmp_path), output_name=name)) if i.field == "output_name"]
    assert [i.code for i in slider] == ["output_name_invalid"]
    assert output_name_problem(name).text in slider[0].message


@pytest.mark.parametrize("name", ["CONSOLE", "com10", "lpt", "nul_lora", "a" * 215, "あ" * 71, "my.lora", "x-1_y"])
def test_ordinary_names_still_pass(tmp_path, name):
    from trainer.validation import output_path_issues

    assert output_path_issues(TrainConfig(output_dir=str(tmp_path), output_name=name)) == []


# ---- the tools and the slider wizard ---------------------------------------------------------------
def _lora(path: Path) -> Path:
    from trainer.network.kohya_format import write_lora_file
    from trainer.tools.synthetic import random_lora, sd15_module_shapes

    shapes = dict(list(sd15_module_shapes(conv=False).items())[:2])
    write_lora_file(path, random_lora(shapes, 4, 2.0), save_precision="float")
    return path


def test_tools_failures_are_messages(tmp_path):
    lora = _lora(tmp_path / "in.safetensors")
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    proc = cli("trainer.tools", "resize", "--model", str(lora), "--new_rank", "2",
               "--save_to", str(blocker / "out.safetensors"))
    assert_one_message(proc, str(blocker))
    too_long = tmp_path / ("n" * 300 + ".safetensors")
    assert_one_message(cli("trainer.tools", "resize", "--model", str(lora), "--new_rank", "2", "--save_to",
                           str(too_long)), "too long")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 4)
    assert_one_message(cli("trainer.tools", "inspect", "--model", str(bad), "--debug"), str(bad))


def test_slider_failures_are_messages(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text("[1, 2]", encoding="utf-8")
    assert_one_message(cli("trainer.slider", "--spec", str(spec)), str(spec), "JSON object")
    spec.write_bytes('{"prompt": "写真"}'.encode("shift_jis"))
    assert_one_message(cli("trainer.tools", "slider", "--spec", str(spec)), str(spec), "UTF-8")
    out = tmp_path / "x" / "out"
    proc = cli("trainer.slider", "--output_dir", str(out), "--output_name", "../../esc", "--model", "m")
    assert_one_message(proc, "output_name")
    assert not (tmp_path / "x").exists() and not (tmp_path / "esc.events.jsonl").exists()


def test_unexpected_errors_are_one_line_unless_debug():
    from trainer.cli import run_guarded

    def broken() -> int:
        raise RuntimeError("boom")

    assert run_guarded(broken, debug=False) == 1
    with pytest.raises(RuntimeError, match="boom"):
        run_guarded(broken, debug=True)


def test_debug_flag_is_accepted_everywhere():
    for args in (("trainer", "--help"), ("trainer.tools", "inspect", "--help"), ("trainer.slider", "--help")):
        proc = cli(*args, timeout=120)
        assert proc.returncode == 0 and "--debug" in proc.stdout, (args, proc.stderr)


# ---- permissions ----------------------------------------------------------------------------------
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_written_files_get_the_users_normal_permissions(tmp_path, umask, mode):
    import torch

    from trainer.fileio import atomic_write_text
    from trainer.training.state import TrainPosition, save_state

    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "preset.json", "{}")
        lora = _lora(tmp_path / "lora.safetensors")
        param = torch.nn.Parameter(torch.zeros(2))
        optimizer = torch.optim.SGD([param], lr=0.1)
        state = save_state(tmp_path / "x-state", position=TrainPosition(0, 0, 0, []), network_state={"p": param},
                           optimizer=optimizer, scheduler=torch.optim.lr_scheduler.ConstantLR(optimizer),
                           noise_generator=torch.Generator())
    finally:
        os.umask(old)
    for path in (tmp_path / "preset.json", lora, *state.iterdir()):
        assert path.stat().st_mode & 0o777 == mode, path
    assert state.stat().st_mode & 0o777 == 0o777 & ~umask


def test_a_file_problem_during_the_run_is_an_error_event_naming_it(tmp_path, tiny_sd1, image_root):
    from tests.conftest import make_run_config, run_engine

    cfg = make_run_config(tmp_path, tiny_sd1, image_root, max_train_steps=1)
    in_the_way = Path(cfg.output_dir) / "tiny.json"  # the run writes its config here: a folder is in the way
    in_the_way.mkdir(parents=True)
    proc, events = run_engine(cfg, tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [e for e in events if e["type"] == "error"]
    assert [e["code"] for e in errors] == ["file_error"] and str(in_the_way) in errors[0]["message"], errors
    assert events[-1]["status"] == "failed"


def test_output_folder_with_a_name_too_long(tmp_path):
    config = write_config(tmp_path / "run.json", output_dir=str(tmp_path / ("d" * 300) / "out"), output_name="x")
    assert_one_message(cli("trainer", "--config", str(config)), "[output_dir_invalid] output_dir", "255 bytes")


def test_a_merged_diffusers_folder_gets_the_users_normal_permissions(tmp_path, tiny_sd1):
    from trainer.tools.models import load_base_model, save_model_folder

    old = os.umask(0o022)
    try:
        out = save_model_folder(load_base_model(str(tiny_sd1)), tmp_path / "merged")
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o755
