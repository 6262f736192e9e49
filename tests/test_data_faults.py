"""Data that would train wrong or not at all, and messages that named the wrong cause: bad latent cache
files, a regularisation folder overlapping the image folder, unreadable folders, a rank change on resume,
and warmup with Adafactor."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_run_config
from test_engine import of_type, one, train
from trainer.config import TrainConfig
from trainer.data.latent_cache import BadCacheFile, CacheKey, CachedLatents, cache_path, load_latents, save_latents
from trainer.tiny import make_image_folder
from trainer.validation import validate

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared CPU: one thread is faster and keeps runs comparable (as in test_engine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- latent cache files -------------------------------------------------------------------------

def _key(image: Path, flipped: bool = False) -> CacheKey:
    return CacheKey.for_image(image, image_size=(64, 64), bucket=(64, 64), resized_size=(64, 64),
                              crop_left_top=(0, 0), flipped=flipped, encoder_id="vae")


def _write_npz(path: Path, key: CacheKey, **arrays) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, lora_gui_key=np.array(key.to_json()), **arrays)


@pytest.mark.parametrize("arrays, reason", [
    (dict(latents=np.full((4, 8, 8), np.nan, dtype=np.float32)), "256 NaN or infinite"),
    (dict(latents=np.zeros((4, 8, 8), dtype=np.float16)), "float16, not float32"),
    (dict(latents=np.zeros((4, 8, 4), dtype=np.float32)), "shape (4, 8, 4), not (4, 8, 8)"),
    (dict(latents=np.zeros((16, 8, 8), dtype=np.float32)), "shape (16, 8, 8), not (4, 8, 8)"),
    (dict(latents=np.zeros((4, 8, 8), dtype=np.float32),
          latents_flipped=np.array([[[np.inf] * 8] * 8] * 4, dtype=np.float32)), "latents_flipped hold 256"),
])
def test_a_bad_cache_file_for_this_image_is_refused_with_the_reason(tmp_path, arrays, reason):
    image = make_image_folder(tmp_path, 1)[0]
    key = _key(image, flipped="latents_flipped" in arrays)
    path = cache_path(image, (64, 64))
    _write_npz(path, key, **arrays)
    with pytest.raises(BadCacheFile) as exc:
        load_latents(path, key, channels=4)
    assert exc.value.path == path and reason in exc.value.reason


def test_a_damaged_file_is_bad_a_stale_one_is_simply_rebuilt(tmp_path):
    image = make_image_folder(tmp_path, 1)[0]
    key, path = _key(image), cache_path(image, (64, 64))
    save_latents(path, key, CachedLatents(np.ones((4, 8, 8), dtype=np.float32)))
    assert load_latents(path, key, channels=4).latents.sum() == 256
    other = _key(image, flipped=True)  # other settings: not this file's key
    assert load_latents(path, other) is None
    path.write_bytes(path.read_bytes()[:100])  # cut short
    with pytest.raises(BadCacheFile, match="cannot be read"):
        load_latents(path, key)


def _pool_encode(pixels: torch.Tensor) -> torch.Tensor:
    """A deterministic 4-channel 'encoder' at 1/8 size: the cache logic is under test here, not a VAE."""
    return torch.nn.functional.avg_pool2d(torch.cat([pixels, pixels[:, :1]], dim=1), 8)


def test_the_dataset_rebuilds_a_nan_cache_file_and_reports_it(tmp_path):
    from trainer.data.dataset import LoraDataset

    make_image_folder(tmp_path / "img" / "2_sks", 3)
    cfg = TrainConfig(train_data_dir=str(tmp_path / "img"), resolution="64", bucket_reso_steps=64, seed=1,
                      cache_latents=True, cache_latents_to_disk=True)
    first = LoraDataset(cfg)
    first.cache_latents(_pool_encode, latent_channels=4)
    npz = tmp_path / "img" / "2_sks" / "img_001_0064x0064_sd.npz"
    with np.load(npz) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["latents"][0, 0, 0] = np.nan
    with open(npz, "wb") as fh:
        np.savez(fh, **arrays)

    second = LoraDataset(cfg)
    second.cache_latents(_pool_encode, latent_channels=4)
    report = second.cache_report
    assert [b.path for b in report.rebuilt] == [npz] and "1 NaN" in report.rebuilt[0].reason
    assert (report.reused_from_disk, report.encoded, report.written_to_disk) == (2, 1, 1)
    with np.load(npz) as data:
        assert np.isfinite(data["latents"]).all()
    batch = second.load_batch(list(range(len(second.plan.samples))), 0)
    assert torch.isfinite(batch["latents"]).all()


def test_engine_warns_about_a_nan_cache_file_rebuilds_it_and_trains(tmp_path, tiny_sd1):
    """The issue: a NaN cache file was 'reused from disk' and the run failed at step 1."""
    make_image_folder(tmp_path / "img" / "2_sks disc", 2, caption="sks disc")
    cfg = make_run_config(tmp_path, tiny_sd1, tmp_path / "img", cache_latents=True, cache_latents_to_disk=True,
                          max_train_epochs=1, save_every_n_epochs=0)
    code, _ = train(cfg)
    assert code == 0
    (npz,) = sorted((tmp_path / "img" / "2_sks disc").glob("img_000_*_sd.npz"))
    with np.load(npz) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["latents"][:] = np.nan
    with open(npz, "wb") as fh:
        np.savez(fh, **arrays)

    code, events = train(cfg.replace(output_name="second"))
    assert code == 0, of_type(events, "error")
    (warning,) = [e for e in of_type(events, "warning") if e["code"] == "latent_cache_rebuilt"]
    assert str(npz) in warning["message"] and "NaN" in warning["message"]
    assert any("1 reused from disk, 1 written to disk" in e["message"] for e in of_type(events, "log"))
    assert all(np.isfinite(e["loss"]) for e in of_type(events, "step"))
    with np.load(npz) as data:
        assert np.isfinite(data["latents"]).all()


# ---- regularisation folder overlapping the image folder ----------------------------------------------

@pytest.mark.parametrize("reg, relation", [("img", "is the image folder"), ("img/reg", "is inside the image folder"),
                                           ("img/1_woman", "is inside the image folder"),
                                           (".", "contains the image folder")])
def test_reg_folder_that_overlaps_the_image_folder_is_refused(tmp_path, reg, relation):
    make_image_folder(tmp_path / "img" / "10_sks woman", 2)
    make_image_folder(tmp_path / "img" / "1_woman", 2)
    make_image_folder(tmp_path / "img" / "reg" / "1_woman", 2)
    cfg = TrainConfig(train_data_dir=str(tmp_path / "img"), reg_data_dir=str(tmp_path / reg),
                      output_dir=str(tmp_path / "out"))
    (found,) = [i for i in validate(cfg) if i.code == "reg_dir_overlaps_train"]
    assert (found.field, found.level) == ("reg_data_dir", "error")
    assert relation in found.message and found.params == {"path": str(tmp_path / reg),
                                                          "train_path": str(tmp_path / "img")}


def test_reg_folder_beside_the_image_folder_is_fine(tmp_path):
    make_image_folder(tmp_path / "img" / "10_sks woman", 2)
    make_image_folder(tmp_path / "reg" / "1_woman", 2)
    cfg = TrainConfig(train_data_dir=str(tmp_path / "img"), reg_data_dir=str(tmp_path / "reg"))
    assert not [i for i in validate(cfg) if i.code == "reg_dir_overlaps_train"]


# ---- unreadable folders -------------------------------------------------------------------------------

# Run as another user when this one is root (root reads a chmod 000 folder anyway): everything the check
# needs is imported first, then the process gives up root for good and scans.
UNREADABLE_CHECK = """
import json, os, sys
from trainer.config import TrainConfig
from trainer.data.scan import DatasetError, scan_dataset
from trainer.validation import validate
validate(TrainConfig(train_data_dir=sys.argv[3]))  # warm every lazy import while they are readable
if os.geteuid() == 0:
    os.setgid(65534)
    os.setuid(65534)
out = {}
for name, folder in (("root", sys.argv[1]), ("subfolder", sys.argv[2])):
    cfg = TrainConfig(train_data_dir=folder)
    out[name] = [[i.code, i.field, i.message] for i in validate(cfg) if i.field == "train_data_dir"]
    try:
        scan_dataset(cfg).raise_for_problems()
    except DatasetError as exc:
        out[name].append([exc.code, exc.field, exc.message])
print(json.dumps(out))
"""


def test_unreadable_folders_say_they_cannot_be_read_and_why():
    base = Path(tempfile.mkdtemp(prefix="lora_gui_perm_"))
    try:
        base.chmod(0o755)
        locked = base / "locked"
        make_image_folder(locked / "10_sks", 1)
        make_image_folder(base / "img" / "10_sks", 1)
        make_image_folder(base / "good" / "10_sks", 1)
        for path in (base / "img", base / "good", base / "good" / "10_sks", base / "img" / "10_sks"):
            path.chmod(0o755)
        locked.chmod(0o000)
        (base / "img" / "10_sks").chmod(0o000)
        proc = subprocess.run([sys.executable, "-c", UNREADABLE_CHECK, str(locked), str(base / "img"),
                               str(base / "good")], capture_output=True, text=True, cwd=REPO, timeout=120)
        assert proc.returncode == 0, proc.stderr
        found = json.loads(proc.stdout)
    finally:
        for path in (base / "locked", base / "img" / "10_sks"):
            path.chmod(0o755)
        shutil.rmtree(base)
    for name, folder in (("root", locked), ("subfolder", base / "img" / "10_sks")):
        codes = {code for code, _, _ in found[name]}
        assert codes == {"dir_unreadable"}, found[name]  # not "is a file", not "no <repeats>_ folders"
        for _, field, message in found[name]:
            assert field == "train_data_dir" and str(folder) in message
            assert "Permission denied" in message and "is a file" not in message


def test_a_file_is_still_called_a_file(tmp_path):
    (tmp_path / "list.txt").write_text("x")
    (issue,) = [i for i in validate(TrainConfig(train_data_dir=str(tmp_path / "list.txt"))) if i.level == "error"
                and i.field == "train_data_dir"]
    assert issue.code == "dir_not_folder"


# ---- rank change on resume ------------------------------------------------------------------------------

def test_resume_with_another_rank_names_resume_and_both_ranks(tmp_path, tiny_sd1):
    make_image_folder(tmp_path / "img" / "1_sks disc", 1, caption="sks disc")
    cfg = make_run_config(tmp_path, tiny_sd1, tmp_path / "img", max_train_epochs=1, save_state=True,
                          lora_type="LoCon", conv_dim=2, conv_alpha=1.0)
    code, events = train(cfg)
    assert code == 0, of_type(events, "error")
    state = tmp_path / "out" / "tiny-state"
    assert state.is_dir()

    # under another name: the finished run's final file would clash (files are never overwritten)
    code, events = train(cfg.replace(resume=str(state), network_dim=8, output_name="again"))
    error = one(events, "error")
    assert code == 1 and (error["field"], error["code"]) == ("resume", "resume_state_mismatch")
    assert "saved training state in Resume" in error["message"] and str(state) in error["message"]
    assert "rank 4, but Network Rank (network_dim) is 8" in error["message"]
    assert "Network weights" not in error["message"] and "Set Network Rank (network_dim) to 4" in error["hint"]
    assert error["params"]["saved_rank"] == 4 and error["params"]["network_rank"] == 8

    code, events = train(cfg.replace(resume=str(state), conv_dim=4, output_name="again"))
    error = one(events, "error")
    assert code == 1 and error["field"] == "resume"
    assert "rank 2, but Convolution Rank (conv_dim) is 4" in error["message"]


# ---- warmup with Adafactor: one behaviour in the page and the engine -----------------------------------

def test_adafactor_keeps_its_warmup_in_the_page_and_the_engine():
    from lora_gui import rules
    from trainer.training.optimizers import build_optimizer
    from trainer.training.schedulers import build_lr_scheduler

    values = dict(optimizer_type="Adafactor", lr_scheduler="cosine", lr_warmup_steps=10)
    assert rules.field_states(values)["lr_warmup_steps"] == (True, None)
    assert rules.disabled_notes(values, "en") == {}
    cfg = TrainConfig(optimizer_type="Adafactor", lr_scheduler="cosine", lr_warmup_steps=10)
    assert not [i for i in validate(cfg) if "warmup" in i.code]

    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = build_optimizer("Adafactor", [{"params": [param], "lr": 1e-3}], 1e-3, "")
    scheduler = build_lr_scheduler("cosine", optimizer, total_steps=100, warmup=10, num_cycles=1, power=1.0)
    rates = []
    for _ in range(12):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == 0 and rates[5] == pytest.approx(5e-4) and rates[10] == pytest.approx(1e-3)


@pytest.mark.parametrize("scheduler, engine_code", [("adafactor", "warmup_ignored"),
                                                     ("constant", "warmup_with_constant")])
def test_a_scheduler_without_warmup_resets_it_and_says_so(scheduler, engine_code):
    from lora_gui import rules

    values = dict(optimizer_type="Adafactor", lr_scheduler=scheduler, lr_warmup_steps=10)
    assert rules.field_states(values)["lr_warmup_steps"] == (False, 0)
    note_en = rules.disabled_notes(values, "en")["lr_warmup_steps"]
    note_ja = rules.disabled_notes(values, "ja")["lr_warmup_steps"]
    assert f"The {scheduler} scheduler" in note_en and "set to 0" in note_en
    assert scheduler in note_ja and "0 に" in note_ja
    cfg = TrainConfig(optimizer_type="Adafactor", lr_scheduler=scheduler, lr_warmup_steps=10)
    assert engine_code in {i.code for i in validate(cfg)}  # the engine does not warm up either, and says so


def test_the_page_shows_the_reset_note_under_the_warmup_field():
    from lora_gui import ui
    from lora_gui.checks import check_form
    from lora_gui.form import config_to_values

    values = config_to_values(TrainConfig(optimizer_type="Adafactor", lr_scheduler="adafactor"))
    notes = ui._notes(tuple(values), check_form(values, "ja"), "ja")
    assert "adafactor スケジューラ" in notes["lr_warmup_steps"] and 'data-note="warmup_off"' in notes["lr_warmup_steps"]
    values = config_to_values(TrainConfig(optimizer_type="Adafactor", lr_scheduler="cosine"))
    assert "lr_warmup_steps" not in ui._notes(tuple(values), check_form(values, "en"), "en")
