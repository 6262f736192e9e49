"""The engine's process, whether this server started it (a child) or an earlier server did.

The engine runs in its own session (POSIX) or process group (Windows): the terminal's Ctrl+C and
hang-up reach only the server, and a server that dies leaves the training running. The server
decides what its own Ctrl+C means (JobManager.shutdown asks the engine to stop and save).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Optional

import psutil

# psutil computes a start time from boot time and clock ticks: equal within rounding for one process
CREATE_TIME_TOLERANCE_SEC = 1.0


def create_time_of(pid: int) -> float:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return 0.0


class ChildProcess:
    """An engine this server started: its exit code is known."""

    def __init__(self, popen: subprocess.Popen):
        self.popen = popen
        self.pid = popen.pid
        self.create_time = create_time_of(popen.pid)

    def running(self) -> bool:
        return self.popen.poll() is None

    @property
    def exit_code(self) -> Optional[int]:
        return self.popen.returncode

    def interrupt(self) -> None:
        if sys.platform != "win32":
            try:
                self.popen.send_signal(signal.SIGINT)
            except OSError:
                pass

    def kill(self) -> None:
        try:
            self.popen.kill()
        except OSError:
            pass


class AttachedProcess:
    """An engine an earlier server started: alive or not, but its exit code is lost with that server."""

    exit_code: Optional[int] = None

    def __init__(self, proc: psutil.Process):
        self.proc = proc
        self.pid = proc.pid
        self.create_time = proc.create_time()

    def running(self) -> bool:
        try:
            # is_running() also compares the start time, so a reused pid reads as ended
            return self.proc.is_running() and self.proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def interrupt(self) -> None:
        if sys.platform != "win32" and self.running():
            try:
                self.proc.send_signal(signal.SIGINT)
            except psutil.Error:
                pass

    def kill(self) -> None:
        if self.running():
            try:
                self.proc.kill()
            except psutil.Error:
                pass


EngineProcess = ChildProcess | AttachedProcess


def spawn_engine(command: list[str], cwd: Path, log_path: Path, env: dict[str, str]) -> ChildProcess:
    """Start `command` with stdout and stderr going to `log_path`, detached from the server's terminal."""
    with open(log_path, "w", encoding="utf-8") as log:  # the child keeps its own copy of the handle
        popen = subprocess.Popen(command, cwd=str(cwd), stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=env, **_detached())
    return ChildProcess(popen)


def _detached() -> dict:
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def find_engine(pid: int, create_time: float, run_file: str) -> Optional[AttachedProcess]:
    """The recorded engine, if it still runs: the same pid, started at the recorded time, with the
    run file in its command line. A pid that another program got since (after a reboot) is None."""
    if pid <= 0:
        return None
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) > CREATE_TIME_TOLERANCE_SEC:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE or run_file not in proc.cmdline():
            return None
        return AttachedProcess(proc)
    except psutil.Error:
        return None
