"""Atomic file writes: write under a temporary name in the same folder, then rename.

A killed process therefore never leaves a truncated file under the final name, and
`exclusive=True` refuses to replace an existing file instead of silently overwriting it.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

TEMP_FILE_SUFFIX = ".tmp"  # atomic_path's temporary files are `.<final name>.<8 random chars>.tmp`
# tempfile's random part: 8 characters of [a-z0-9_]. State folders are built in `.<name>-state.<8 chars>`.
_OUR_TEMP_FILE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
_OUR_TEMP_STATE_DIR = re.compile(r"^\..+-state\.[a-z0-9_]{8}$")
PROCESS_STARTED = time.time()  # "older than this process": what a crashed earlier process left behind


class OutputExistsError(FileExistsError):
    """Raised when a write would silently replace an existing file."""


@contextmanager
def atomic_path(path: Path, *, exclusive: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if exclusive and path.exists():
        raise OutputExistsError(f"{path} already exists; refusing to overwrite it")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_FILE_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if exclusive and path.exists():
            raise OutputExistsError(f"{path} already exists; refusing to overwrite it")
        # mkstemp creates 0600; the finished file gets the permissions any program gives a new file.
        os.chmod(tmp, 0o666 & ~current_umask())
        try:
            os.replace(tmp, path)
        except OSError as exc:  # name the file the user knows, not the temporary one
            raise type(exc)(exc.errno, exc.strerror, str(path)) from exc
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    with atomic_path(path, exclusive=exclusive) as tmp:
        write_synced(tmp, data)


def write_synced(path: Path, data: bytes) -> None:
    """Write `data` and make the OS put it on disk: a full disk raises OSError (ENOSPC) here, not later."""
    with open(path, "wb") as fh:
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


# ---- names that work on every OS ---------------------------------------------------------------
MAX_NAME_BYTES = 255  # one path component: ext4/XFS/APFS count bytes, NTFS UTF-16 units (never more)
_UNPORTABLE_CHARS = re.compile(r'[<>:"/\\|?*\x00-\x1f]')
WINDOWS_RESERVED_NAMES = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{dev}{n}" for dev in ("COM", "LPT") for n in (*"123456789", "\u00b9", "\u00b2", "\u00b3")])


class NameProblem(NamedTuple):
    kind: str  # invalid | trailing | reserved | too_long
    text: str  # completes a sentence that starts with the name: "... ends with a dot or a space, ..."
    params: dict


def portable_name_problem(name: str, *, longest_derived: str = "{}") -> NameProblem | None:
    """What keeps `name` from being a file name on Windows, macOS and Linux alike, or None.

    `longest_derived` is the longest file name made from it ('{}' stands for the name), so that the
    length check counts what is added (suffixes, temporary names)."""
    if not name.strip() or name.strip() in (".", ".."):
        return NameProblem("invalid", "is not a file name", {})
    bad = sorted(set(_UNPORTABLE_CHARS.findall(name)))
    if bad:
        shown = " ".join(repr(c)[1:-1] for c in bad)
        return NameProblem("invalid", f"contains {shown}, which file names cannot hold "
                           "(no / \\ : * ? \" < > | or control characters)", {})
    if name[-1] in ". ":
        return NameProblem("trailing", "ends with a dot or a space, which Windows removes from file names", {})
    device = name.split(".")[0]
    if device.rstrip(" ").upper() in WINDOWS_RESERVED_NAMES:
        return NameProblem("reserved", f"starts with {device!r}, a device name reserved by Windows (CON, PRN, AUX, "
                           "NUL, COM1-9, LPT1-9, with or without an extension)", {"device": device})
    own = len(name.encode("utf-8"))
    size = len(longest_derived.format(name).encode("utf-8"))
    if size > MAX_NAME_BYTES:
        room = MAX_NAME_BYTES - (size - own)
        example = longest_derived.format("<name>")
        return NameProblem("too_long", f"is too long: it has {own} bytes, and as the run writes files like "
                           f"{example!r} and a file name holds at most {MAX_NAME_BYTES} bytes, the name may have "
                           f"at most {room}", {"bytes": own, "max_bytes": room, "example": example})
    return None

def current_umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Remove what a killed run left in `folder`: temporary files and state folders of exactly our naming,
    older than this process and not open in any live process. Never looks below `folder` itself, never
    touches anything else. Returns what was removed."""
    folder = Path(folder)
    try:
        entries = [e for e in folder.iterdir()
                   if (_OUR_TEMP_FILE.match(e.name) and e.is_file() and not e.is_symlink())
                   or (_OUR_TEMP_STATE_DIR.match(e.name) and e.is_dir() and not e.is_symlink())]
    except OSError:
        return []
    stale = [e for e in entries if _older_than_process(e)]
    if not stale:
        return []
    held = _paths_open_in_live_processes()
    if held is None:  # no way to see other processes' open files here: only what is a day old
        stale = [e for e in stale if _newest_mtime(e) < time.time() - 86400]
        held = set()
    removed = []
    for entry in stale:
        key = os.path.realpath(entry)
        if any(h == key or h.startswith(key + os.sep) for h in held):
            continue
        try:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        except OSError:
            continue  # in use (Windows) or gone already: leave it
        removed.append(entry)
    return removed


def _newest_mtime(entry: Path) -> float:
    times = [entry.lstat().st_mtime]
    if entry.is_dir():
        times += [child.lstat().st_mtime for child in entry.iterdir()]
    return max(times)


def _older_than_process(entry: Path) -> bool:
    try:
        return _newest_mtime(entry) < PROCESS_STARTED
    except OSError:
        return False


def _paths_open_in_live_processes() -> set[str] | None:
    """Real paths of every file open in (or the working folder of) a live process; None where unknowable."""
    proc = Path("/proc")
    if not sys.platform.startswith("linux") or not (proc / "self" / "fd").is_dir():
        return None
    held: set[str] = set()
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            held.add(os.readlink(pid_dir / "cwd"))
            for fd in (pid_dir / "fd").iterdir():
                held.add(os.readlink(fd))
        except OSError:
            continue  # the process ended, or is not ours to look at
    return held
