"""Atomic file writes: write under a temporary name in the same folder, then rename.

A killed process therefore never leaves a truncated file under the final name, and
`exclusive=True` refuses to replace an existing file instead of silently overwriting it.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


class OutputExistsError(FileExistsError):
    """Raised when a write would silently replace an existing file."""


@contextmanager
def atomic_path(path: Path, *, exclusive: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if exclusive and path.exists():
        raise OutputExistsError(f"{path} already exists; refusing to overwrite it")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if exclusive and path.exists():
            raise OutputExistsError(f"{path} already exists; refusing to overwrite it")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    with atomic_path(path, exclusive=exclusive) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_text(path: Path, text: str, *, exclusive: bool = False) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), exclusive=exclusive)


def atomic_write_with(path: Path, writer: Callable[[Path], None], *, exclusive: bool = False) -> None:
    """Let `writer(tmp_path)` produce the file (e.g. safetensors.save_file), then rename it."""
    with atomic_path(path, exclusive=exclusive) as tmp:
        writer(tmp)


def same_path(a: Path, b: Path) -> bool:
    """True when two paths name the same file or folder (symlinks and '..' resolved)."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()
