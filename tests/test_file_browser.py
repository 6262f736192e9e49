"""What the file picker lists and fills in (lora_gui.file_browser), for each kind of path parameter."""

from __future__ import annotations

from lora_gui.file_browser import MAX_ENTRIES, Accept, chosen_value, list_folder, start_folder
from trainer.config import TrainConfig
from trainer.params import field_specs
from trainer.tools.options import option_specs


def _tree(root):
    (root / "Zeta").mkdir()
    (root / "alpha").mkdir()
    (root / ".hidden").mkdir()
    for name in ("b.safetensors", "A.CKPT", "notes.txt", "model.bin", ".secret.safetensors"):
        (root / name).write_bytes(b"x" * 3)
    return root


def test_every_path_parameter_says_what_its_picker_offers():
    specs = list(field_specs(TrainConfig).values())
    for tool in ("inspect", "merge", "resize", "extract"):
        specs += option_specs(tool).values()
    paths = [s for s in specs if s.widget == "path"]
    assert paths and all(s.accept for s in paths), [s.name for s in paths if not s.accept]
    train = field_specs(TrainConfig)
    assert Accept.of(train["train_data_dir"].accept) == Accept(folders=True, suffixes=())
    assert Accept.of(train["network_weights"].accept).folders is False
    assert Accept.of(train["pretrained_model_name_or_path"].accept).folders  # a diffusers folder, or a file


def test_listing_filters_by_what_the_field_takes(tmp_path):
    root = _tree(tmp_path)
    folders = list_folder(root, Accept.of(("folder",)))
    assert [(e.name, e.is_folder) for e in folders.entries] == [("alpha", True), ("Zeta", True)]
    assert folders.hidden == 4  # the visible files; dot entries are not counted

    lora = list_folder(root, Accept.of((".safetensors", ".ckpt")))
    assert [e.name for e in lora.entries] == ["alpha", "Zeta", "A.CKPT", "b.safetensors"]  # folders first, by name
    assert lora.entries[-1].size == 3 and lora.hidden == 2

    anything = list_folder(root, Accept.of(()))
    assert len(anything.entries) == 6 and anything.hidden == 0


def test_listing_a_missing_folder_says_why_and_large_folders_are_cut(tmp_path):
    assert list_folder(tmp_path / "gone", Accept.of(())).error
    for i in range(MAX_ENTRIES + 7):
        (tmp_path / f"{i:04d}.safetensors").write_bytes(b"")
    listing = list_folder(tmp_path, Accept.of((".safetensors",)))
    assert len(listing.entries) == MAX_ENTRIES and listing.hidden == 7


def test_start_folder_and_chosen_value(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.safetensors").write_bytes(b"")
    home = tmp_path / "home"
    assert start_folder("", home) == home
    assert start_folder(str(tmp_path / "a"), home) == tmp_path / "a"
    assert start_folder(str(tmp_path / "a" / "x.safetensors"), home) == tmp_path / "a"  # a file: its folder
    assert start_folder(str(tmp_path / "a" / "not" / "yet"), home) == tmp_path / "a"  # the nearest that exists
    assert start_folder(f'"{tmp_path / "a"}"', home) == tmp_path / "a"  # pasted with quotes

    save = Accept.of(("save", ".safetensors"))
    assert chosen_value(tmp_path, "", "/old/place/merged.safetensors", save) == str(tmp_path / "merged.safetensors")
    assert chosen_value(tmp_path, "", "", save) == str(tmp_path)
    assert chosen_value(tmp_path, "x.safetensors", "", save) == str(tmp_path / "x.safetensors")
    assert chosen_value(tmp_path, "", "whatever", Accept.of(("folder",))) == str(tmp_path)
