"""A save that finds the disk full: what to tell the user, and waiting before the next try.

Every save writes new files under temporary names (trainer/fileio.py), so a save that fails for lack of
space leaves the earlier saves as they were; the weights stay in memory for the next try.
"""

from __future__ import annotations

import errno
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

RETRY_SECONDS = 10.0  # a final save that found the disk full tries again this often
FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
FAILED_HINT = ("Free some space on that disk, then train again: resume from the previous save's state "
               "folder, or start from its LoRA file (network_weights).")


@dataclass
class DiskFull:
    folder: Path
    bytes_needed: int  # an estimate: the tensors of the LoRA file and of the state folder
    bytes_free: int
    previous_save: Optional[str]  # the last file saved in this run, left intact

    def params(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "bytes_needed": self.bytes_needed, "bytes_free": self.bytes_free,
                "previous_save": self.previous_save, "previous_save_intact": True}

    def _situation(self, file_name: str) -> str:
        previous = (f"the previous save, {self.previous_save}, is intact" if self.previous_save
                    else "nothing was saved before")
        return (f"The disk holding {self.folder} is full: saving {file_name} needs about "
                f"{format_bytes(self.bytes_needed)} and {format_bytes(self.bytes_free)} is free; {previous}.")

    def skipped_message(self, file_name: str) -> str:
        return self._situation(file_name) + " Training goes on and the next save tries again: free some space."

    def waiting_message(self, file_name: str, seconds: float) -> str:
        return (self._situation(file_name) + f" The weights are kept in memory and the save is tried again "
                f"every {seconds:g} s: free some space. Stop (or Ctrl-C) gives up after one more try.")

    def failed_message(self, file_name: str) -> str:
        return self._situation(file_name) + f" {file_name} was not saved."


def full_disk(exc: BaseException, folder: Path, bytes_needed: int, previous_save: Optional[str]) -> Optional[DiskFull]:
    """A DiskFull when `exc` says the disk (or the user's quota) is full, else None."""
    if not isinstance(exc, OSError) or exc.errno not in FULL_DISK_ERRNOS:
        return None
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = 0
    return DiskFull(Path(folder), int(bytes_needed), int(free), previous_save)


def stop_mark(stop: Any) -> Any:
    """What `stop` has been asked so far (StopSignal.mark()); None for a stop object without marks."""
    return stop.mark() if hasattr(stop, "mark") else None


def wait_for_stop(stop: Any, mark: Any, seconds: float) -> bool:
    """Sleep up to `seconds`; True as soon as a stop was asked for since `mark`."""
    def asked() -> bool:
        return stop.requested_since(mark) if hasattr(stop, "requested_since") else stop.requested()

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if asked():
            return True
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    return asked()


def format_bytes(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 1024:.0f} KB"
