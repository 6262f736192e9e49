"""What the command lines share: every failure ends as one message (file or field, what to do), never a
bare traceback unless --debug asks for it. Torch-free."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

DEBUG_HELP = "on an unexpected failure, show the full traceback instead of the one-line message"

# errno -> what to do about it (the message names the file)
OS_ERROR_ADVICE = {
    errno.EROFS: "it is on a read-only disk: choose another output folder",
    errno.EACCES: "you have no permission to write there: choose a folder you can write to",
    errno.EPERM: "the system does not allow this: choose a folder you can write to",
    errno.ENAMETOOLONG: "a file name is too long: choose a shorter output name or folder",
    errno.ENOSPC: "the disk is full: free some space or choose a folder on another disk",
    errno.EEXIST: "a file is in the way where a folder is needed: choose another folder or move the file",
    errno.ENOTDIR: "a file is in the way where a folder is needed: choose another folder or move the file",
    errno.EISDIR: "that is a folder, not a file",
    errno.ENOENT: "it does not exist: check the path",
}


class CommandLineError(Exception):
    """A problem the user can fix; main() prints it as `error: <message>` and exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def add_debug_flag(parser: argparse.ArgumentParser, *, in_subcommand: bool = False) -> None:
    """--debug; `in_subcommand` for a subcommand's copy, which must not reset a --debug given before it."""
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP,
                        default=argparse.SUPPRESS if in_subcommand else False)


def describe_os_error(exc: OSError, what: str = "") -> str:
    """'cannot write <file>: <reason>; <advice>' from an OSError, naming the file it carries."""
    target = exc.filename if exc.filename is not None else what
    reason = exc.strerror or str(exc)
    advice = OS_ERROR_ADVICE.get(exc.errno or -1)
    return f"{target}: {reason}" + (f"; {advice}" if advice else "")


def read_json_object(path: Path, *, what: str) -> dict[str, Any]:
    """The JSON object in `path` (UTF-8), or CommandLineError saying what is wrong with the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CommandLineError(f"cannot read the {what} {describe_os_error(exc, str(path))}", 2) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CommandLineError(
            f"the {what} {path} is not UTF-8 text (byte {exc.start} cannot be read; Shift_JIS and other "
            "encodings are not accepted): save it as UTF-8 and try again", 2) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandLineError(f"the {what} {path} is not valid JSON: {exc.msg} at line {exc.lineno}, "
                               f"column {exc.colno}", 2) from None
    if not isinstance(data, dict):
        kind = {list: "an array [...]", str: "a string", bool: "true/false"}.get(type(data), "a number")
        if data is None:
            kind = "null"
        raise CommandLineError(f"the {what} {path} holds {kind}, not a JSON object: write it as "
                               '{"name": value, ...}', 2)
    return data


def run_guarded(body: Callable[[], int], *, debug: bool) -> int:
    """Run a command's body; a known problem or an OSError becomes one line on stderr, anything else too
    unless `debug` (then the traceback is shown)."""
    try:
        return body()
    except CommandLineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if debug:
            raise
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the point of this function
        if debug:
            raise
        where = traceback.extract_tb(exc.__traceback__)[-1]
        print(f"error: unexpected {type(exc).__name__}: {exc} (in {os.path.basename(where.filename)}:"
              f"{where.lineno}; run again with --debug for the full traceback)", file=sys.stderr)
        return 1
