"""Every image mode Pillow opens trains as the right 8-bit RGB picture, and the dataset summary says which
files were converted (and how) and which were skipped (and why)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from trainer.config import TrainConfig
from trainer.data.image_modes import conversion_notes
from trainer.data.images import load_image
from trainer.data.scan import scan_dataset
from trainer.data.steps import plan_steps


def cfg_for(root, **kw) -> TrainConfig:
    return TrainConfig(train_data_dir=str(root), resolution="64", min_bucket_reso=32, max_bucket_reso=128,
                       bucket_reso_steps=32, seed=1, **kw)


def rgb(*pixels) -> np.ndarray:
    """A 1-row image of the given RGB pixels."""
    return np.array([pixels], dtype=np.uint8)


def grey16() -> Image.Image:
    return Image.fromarray(np.array([[0, 257 * 128, 65535]], dtype=np.uint16))


def grey_alpha() -> Image.Image:
    img = Image.new("LA", (3, 1))
    img.putdata([(0, 255), (100, 0), (200, 128)])
    return img


def palette_transparent() -> Image.Image:
    img = Image.new("P", (3, 1))
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255])
    img.putdata([1, 2, 0])
    img.info["transparency"] = 0
    return img


def palette_plain() -> Image.Image:
    img = palette_transparent()
    del img.info["transparency"]
    return img


def rgba() -> Image.Image:
    img = Image.new("RGBA", (3, 1))
    img.putdata([(255, 0, 0, 255), (0, 255, 0, 0), (0, 0, 255, 128)])
    return img


def cmyk() -> Image.Image:
    img = Image.new("CMYK", (3, 1))
    img.putdata([(0, 255, 255, 0), (0, 0, 0, 255), (0, 0, 0, 0)])
    return img


# (writer, file name, expected 8-bit RGB, expected note codes)
CASES = {
    # Pillow's own convert("RGB") clips these at 255: the "almost white" image
    "16-bit grey PNG": (lambda p: grey16().save(p), "g16.png", rgb((0, 0, 0), (128, 128, 128), (255, 255, 255)),
                        ["high_bit_depth", "greyscale"]),
    "16-bit grey TIFF": (lambda p: grey16().save(p), "g16.tif", rgb((0, 0, 0), (128, 128, 128), (255, 255, 255)),
                         ["high_bit_depth", "greyscale"]),
    "float TIFF": (lambda p: Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)).save(p), "f.tif",
                   rgb((0, 0, 0), (128, 128, 128), (255, 255, 255)), ["float", "greyscale"]),
    # transparency on white: 100 at alpha 0 -> 255; 200 at alpha 128 -> (200*128 + 255*127)/255 = 227.6
    "grey + alpha PNG": (lambda p: grey_alpha().save(p), "la.png", rgb((0, 0, 0), (255, 255, 255), (228, 228, 228)),
                         ["greyscale", "transparency"]),
    "RGBA PNG": (lambda p: rgba().save(p), "rgba.png", rgb((255, 0, 0), (255, 255, 255), (127, 127, 255)),
                 ["transparency"]),
    "palette with a transparent entry": (lambda p: palette_transparent().save(p, transparency=0), "p.png",
                                         rgb((255, 0, 0), (0, 0, 255), (255, 255, 255)), ["palette", "transparency"]),
    "palette": (lambda p: palette_plain().save(p), "p.bmp", rgb((255, 0, 0), (0, 0, 255), (0, 0, 0)), ["palette"]),
    "CMYK JPEG": (lambda p: cmyk().save(p, quality=100), "c.jpg", rgb((255, 0, 0), (0, 0, 0), (255, 255, 255)),
                  ["cmyk"]),
    "CMYK TIFF": (lambda p: cmyk().save(p), "c.tiff", rgb((255, 0, 0), (0, 0, 0), (255, 255, 255)), ["cmyk"]),
    "1-bit": (lambda p: Image.fromarray(np.array([[True, False, True]])).save(p), "b.png",
              rgb((255, 255, 255), (0, 0, 0), (255, 255, 255)), ["greyscale"]),
    "greyscale": (lambda p: Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8)).save(p), "l.png",
                  rgb((0, 0, 0), (77, 77, 77), (255, 255, 255)), ["greyscale"]),
    "RGB": (lambda p: Image.fromarray(rgb((1, 2, 3), (4, 5, 6), (7, 8, 9))).save(p), "rgb.png",
            rgb((1, 2, 3), (4, 5, 6), (7, 8, 9)), []),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_mode_loads_as_the_expected_8bit_rgb(tmp_path, case):
    write, name, expected, codes = CASES[case]
    sub = tmp_path / "img" / "1_x"
    sub.mkdir(parents=True)
    write(sub / name)
    loaded = np.asarray(load_image(sub / name))
    assert loaded.dtype == np.uint8 and loaded.shape == expected.shape
    tolerance = 2 if name.endswith(".jpg") else 1  # JPEG is lossy even at quality 100
    assert np.abs(loaded.astype(int) - expected).max() <= tolerance, loaded

    scan = scan_dataset(cfg_for(tmp_path / "img"))
    assert [img.path.name for img in scan.train.subsets[0].images] == [name]
    notes = [n.code for c in scan.train.converted for n in c.notes]
    assert notes == codes
    assert not scan.train.skipped


def test_16bit_grey_is_no_longer_almost_white(tmp_path):
    """The issue's file: a mid-grey 16-bit PNG trained as mean 254.6 of 255."""
    path = tmp_path / "grey16.png"
    Image.fromarray(np.full((16, 16), 32896, dtype=np.uint16)).save(path)
    assert Image.open(path).mode == "I;16"
    assert np.asarray(load_image(path)).mean() == pytest.approx(128, abs=0.5)


def test_cmyk_with_a_broken_icc_profile_falls_back_to_the_plain_formula(tmp_path):
    path = tmp_path / "c.jpg"
    cmyk().save(path, quality=100, icc_profile=b"not a profile")
    assert Image.open(path).info.get("icc_profile") == b"not a profile"
    loaded = np.asarray(load_image(path))
    assert np.abs(loaded.astype(int) - rgb((255, 0, 0), (0, 0, 0), (255, 255, 255))).max() <= 2


def test_lab_tiff_is_colour_converted(tmp_path):
    # Pillow's LAB: L scaled to 0-255, a and b offset by 128; neutral mid grey is sRGB 119
    img = Image.new("LAB", (2, 1))
    img.putdata([(128, 128, 128), (255, 128, 128)])
    img.save(tmp_path / "lab.tif")
    loaded = np.asarray(load_image(tmp_path / "lab.tif"))
    assert np.abs(loaded.astype(int) - rgb((119, 119, 119), (255, 255, 255))).max() <= 1


def test_exif_rotation_is_applied_and_noted(tmp_path):
    sub = tmp_path / "img" / "1_x"
    sub.mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    pixels = np.zeros((2, 3, 3), dtype=np.uint8)
    pixels[0, 0] = (255, 0, 0)  # top-left red
    Image.fromarray(pixels).save(sub / "photo.png", exif=exif)
    loaded = np.asarray(load_image(sub / "photo.png"))
    assert loaded.shape == (3, 2, 3) and tuple(loaded[0, 1]) == (255, 0, 0)  # now top-right
    scan = scan_dataset(cfg_for(tmp_path / "img"))
    assert scan.train.subsets[0].images[0].size == (2, 3)
    (converted,) = scan.train.converted
    assert [(n.code, n.params) for n in converted.notes] == [("exif_orientation", {"orientation": 6})]


def test_gif_and_multipage_tiff_train_on_their_first_frame(tmp_path):
    sub = tmp_path / "img" / "2_x"
    sub.mkdir(parents=True)
    frames = [Image.new("RGB", (64, 64), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    frames[0].save(sub / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(sub / "pages.tif", save_all=True, append_images=frames[1:2])
    Image.new("RGB", (64, 64), (0, 0, 255)).save(sub / "still.gif")
    scan = scan_dataset(cfg_for(tmp_path / "img"), verify=True)
    assert sorted(i.path.name for i in scan.train.subsets[0].images) == ["anim.gif", "pages.tif", "still.gif"]
    notes = {c.path.name: [(n.code, n.params) for n in c.notes] for c in scan.train.converted}
    assert ("first_frame", {"frames": 3}) in notes["anim.gif"]
    assert notes["pages.tif"] == [("first_frame", {"frames": 2})]
    for name in ("anim.gif", "pages.tif"):
        assert np.asarray(load_image(sub / name))[0, 0].tolist() == [255, 0, 0]
    assert plan_steps(cfg_for(tmp_path / "img"), scan).num_train_images == 6  # 3 images x 2 repeats


def test_other_formats_are_listed_as_skipped_with_the_reason_and_the_plan_matches(tmp_path):
    from trainer.data.dataset import LoraDataset

    sub = tmp_path / "img" / "1_x"
    sub.mkdir(parents=True)
    Image.new("RGB", (64, 64), (9, 9, 9)).save(sub / "ok.png")
    Image.new("RGB", (64, 64)).save(sub / "pic.tga")
    Image.new("RGB", (64, 64)).save(sub / "pic2.ppm")
    (sub / "photo.heic").write_bytes(b"\0" * 32)
    (sub / "notes.md").write_text("not an image")
    cfg = cfg_for(tmp_path / "img")
    scan = scan_dataset(cfg)
    skipped = {k.path.name: (k.reason, k.detail) for k in scan.skipped}
    assert skipped == {"pic.tga": ("format", ".tga"), "pic2.ppm": ("format", ".ppm"), "photo.heic": ("format", ".heic")}
    assert all("not used for training" in k.message for k in scan.skipped)
    assert [i.path.name for i in scan.train.subsets[0].images] == ["ok.png"]
    dataset = LoraDataset(cfg, scan)
    assert dataset.plan.num_train_images == 1 and len(dataset) == 1
    batch = dataset.load_batch(dataset.batches(0)[0], 0)
    assert batch["image_paths"] == [str(sub / "ok.png")]

    from trainer.validation import validate

    (warning,) = [i for i in validate(cfg, scan=scan) if i.code == "images_skipped"]
    assert warning.level == "warning" and warning.params["count"] == 3 and "pic.tga" in warning.message


def test_unconvertible_mode_is_skipped_not_counted(tmp_path):
    """A mode outside the supported set (Pillow can make one in memory, e.g. 'La') is skipped with the reason."""
    img = Image.new("La", (4, 4))
    assert conversion_notes(img) == []
    from trainer.data.image_header import ImageInfo

    info = ImageInfo((4, 4), "La")
    assert not info.usable and "La" in info.skip_reason


def test_the_summary_lists_converted_and_skipped_files_in_both_languages(tmp_path):
    from lora_gui.dataset_view import render_summary
    from lora_gui.engine import dataset_summary

    sub = tmp_path / "img" / "3_sks"
    sub.mkdir(parents=True)
    grey16().resize((64, 64)).save(sub / "g16.png")
    rgba().resize((64, 64)).save(sub / "cut.png")
    Image.new("RGB", (64, 64)).save(sub / "old.tga")
    cfg = cfg_for(tmp_path / "img")
    summary = dataset_summary(cfg)
    assert [name for name, _ in summary.converted] == ["3_sks/cut.png", "3_sks/g16.png"]
    assert summary.skipped == [("3_sks/old.tga", "format", ".tga", summary.skipped[0][3])]
    assert summary.total_steps == 2 * 3 * cfg.max_train_epochs  # the two usable images, 3 repeats

    en = render_summary(summary, "en")
    assert "3_sks/g16.png" in en and "I;16 values (0 to 65535) scaled to 8 bits" in en
    assert "transparency composited on a white background" in en
    assert "Not trained on: 1 file(s)" in en and "3_sks/old.tga" in en and ".tga files are not used" in en
    ja = render_summary(summary, "ja")
    assert "8ビットに縮小" in ja and "白い背景" in ja and "学習に使わないファイル：1 個" in ja
    assert "scaled to 8 bits" not in ja


def test_every_note_and_skip_reason_has_both_translations():
    import json
    from pathlib import Path

    from trainer.data.image_modes import NOTE_TEMPLATES

    root = Path(__file__).resolve().parent.parent / "lora_gui" / "i18n"
    for lang in ("en", "ja"):
        ui = json.loads((root / f"{lang}.json").read_text(encoding="utf-8"))["ui"]
        for code in NOTE_TEMPLATES:
            assert f"dataset.note_{code}" in ui, (lang, code)
        assert "dataset.skip_format" in ui and "dataset.skip_mode" in ui
    en = json.loads((root / "en.json").read_text(encoding="utf-8"))["ui"]
    for code, template in NOTE_TEMPLATES.items():
        assert en[f"dataset.note_{code}"] == template  # the page's English is the engine's English
