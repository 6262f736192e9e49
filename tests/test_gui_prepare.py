"""'Prepare folders' copies (never moves) the user's images into the kohya layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from lora_gui.prepare import PrepareError, prepare_folders
from lora_gui.tabs.folders import free_output_name


def _images(folder: Path, n: int, caption: bool = True) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"p{i}.png").write_bytes(b"\x89PNG fake")
        if caption:
            (folder / f"p{i}.txt").write_text("a photo", encoding="utf-8")
    (folder / "notes.md").write_text("not an image", encoding="utf-8")
    return folder


def test_builds_the_layout_and_keeps_the_originals(tmp_path):
    src = _images(tmp_path / "mine", 3)
    reg = _images(tmp_path / "regs", 2, caption=False)
    done = prepare_folders(instance_token="sks", class_token="woman", repeats=20, images_dir=str(src),
                           dest_dir=str(tmp_path / "project"), reg_images_dir=str(reg), reg_repeats=1)
    assert done.train_data_dir == tmp_path / "project" / "img"
    assert sorted(p.name for p in (done.train_data_dir / "20_sks woman").iterdir()) == [
        "p0.png", "p0.txt", "p1.png", "p1.txt", "p2.png", "p2.txt"]
    assert sorted(p.name for p in (tmp_path / "project" / "reg" / "1_woman").iterdir()) == ["p0.png", "p1.png"]
    assert (tmp_path / "project" / "log").is_dir() and (tmp_path / "project" / "model").is_dir()
    assert done.output_dir == tmp_path / "project" / "model"
    assert (done.copied_images, done.copied_captions, done.copied_reg_images) == (3, 3, 2)
    assert len(list(src.iterdir())) == 7  # nothing moved


@pytest.mark.parametrize("kwargs, key", [
    (dict(instance_token=""), "prepare.need_token"),
    (dict(class_token=""), "prepare.need_class"),
    (dict(repeats=0), "prepare.bad_repeats"),
    (dict(instance_token="a/b"), "prepare.bad_chars"),
    (dict(images_dir="/does/not/exist"), "prepare.no_images_dir"),
    (dict(dest_dir=""), "prepare.need_dest"),
])
def test_problems_are_named(tmp_path, kwargs, key):
    src = _images(tmp_path / "mine", 1)
    args = dict(instance_token="sks", class_token="dog", repeats=10, images_dir=str(src),
                dest_dir=str(tmp_path / "p"))
    args.update(kwargs)
    with pytest.raises(PrepareError) as exc:
        prepare_folders(**args)
    assert exc.value.key == key


def test_destination_inside_the_source_is_refused(tmp_path):
    src = _images(tmp_path / "mine", 1)
    with pytest.raises(PrepareError) as exc:
        prepare_folders(instance_token="sks", class_token="dog", repeats=1, images_dir=str(src),
                        dest_dir=str(src / "project"))
    assert exc.value.key == "prepare.dest_inside_source"


def test_free_output_name(tmp_path):
    assert free_output_name(tmp_path, "demo_lora") == "demo_lora"
    (tmp_path / "demo_lora.safetensors").write_bytes(b"")
    (tmp_path / "demo_lora_2-000001.safetensors").write_bytes(b"")
    assert free_output_name(tmp_path, "demo_lora") == "demo_lora_3"
