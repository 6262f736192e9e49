"""What the file picker shows: one folder of this computer, filtered by what a path field accepts.

A path parameter declares `accept` (trainer.params): "folder" (the field takes a folder), file name
suffixes (it takes such a file), "save" (it names a file to write: a folder may be chosen, the file
name is kept). Folders are always listed, to walk into. Torch-free and Gradio-free; the picker's
widgets are lora_gui/tabs/picker.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

MAX_ENTRIES = 500  # a folder of thousands of images would make the list unusable; the note says so


@dataclass(frozen=True)
class Accept:
    folders: bool  # the field takes a folder ("Use this folder")
    suffixes: tuple[str, ...]  # files it takes (lower case, with the dot); () with `any_file`: every file
    any_file: bool = False
    saves: bool = False  # the field names a file to write: choosing a folder keeps the file name

    @classmethod
    def of(cls, accept: tuple) -> "Accept":
        """From a parameter's `accept` metadata; () means folders and every file."""
        if not accept:
            return cls(folders=True, suffixes=(), any_file=True)
        suffixes = tuple(a.lower() for a in accept if a.startswith("."))
        saves = "save" in accept
        return cls(folders="folder" in accept or saves, suffixes=suffixes, saves=saves)

    def takes_file(self, name: str) -> bool:
        return self.any_file or (bool(self.suffixes) and name.lower().endswith(self.suffixes))


@dataclass(frozen=True)
class Entry:
    name: str
    is_folder: bool
    size: int = 0  # bytes, files only


@dataclass
class Listing:
    folder: Path
    entries: list[Entry] = field(default_factory=list)
    hidden: int = 0  # files the field does not take, and entries past MAX_ENTRIES
    error: str = ""  # why the folder could not be read ("" = it was)


def start_folder(value: str, fallback: Path) -> Path:
    """Where the picker opens: the field's folder (or the folder of its file), else its nearest existing
    parent, else `fallback`."""
    text = value.strip().strip('"').strip("'")
    if text:
        path = Path(os.path.expanduser(text))
        if not path.is_absolute():
            path = Path.cwd() / path
        for candidate in (path, *path.parents):
            if candidate.is_dir():
                return candidate
    return fallback


def list_folder(folder: Path, accept: Accept) -> Listing:
    """The sub-folders and the accepted files of `folder`, folders first, by name (case-insensitive);
    hidden (dot) entries are left out."""
    listing = Listing(folder=folder)
    try:
        with os.scandir(folder) as it:
            items = [e for e in it if not e.name.startswith(".")]
    except OSError as exc:
        listing.error = exc.strerror or str(exc)
        return listing
    folders, files = [], []
    for item in items:
        try:
            if item.is_dir():
                folders.append(Entry(item.name, True))
            elif accept.takes_file(item.name):
                files.append(Entry(item.name, False, item.stat().st_size))
            else:
                listing.hidden += 1
        except OSError:  # a broken link or a file that vanished while listing
            listing.hidden += 1
    entries = sorted(folders, key=lambda e: e.name.lower()) + sorted(files, key=lambda e: e.name.lower())
    listing.entries, listing.hidden = entries[:MAX_ENTRIES], listing.hidden + max(0, len(entries) - MAX_ENTRIES)
    return listing


def chosen_value(folder: Path, name: str, current: str, accept: Accept) -> str:
    """The text a field gets when the user chooses `name` in `folder` ("" = the folder itself). A field
    that saves keeps its file name when a folder is chosen."""
    if name:
        return str(folder / name)
    if accept.saves:
        file_name = Path(current.strip()).name if current.strip() else ""
        if file_name and Path(file_name).suffix.lower() in accept.suffixes:
            return str(folder / file_name)
    return str(folder)


def size_text(size: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"
