""""Open TensorBoard": one real TensorBoard server (the tensorboard package's own, as a subprocess) on the
logging folder, on 127.0.0.1 and a free port; a different folder restarts it; it stops with the app."""

from __future__ import annotations

import atexit
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

START_TIMEOUT_SEC = 120  # TensorBoard imports a lot; a loaded 2-core machine needs tens of seconds


class TensorBoardError(Exception):
    def __init__(self, key: str, **params: str):
        super().__init__(key)
        self.key, self.params = key, params


class TensorBoardServer:
    def __init__(self) -> None:
        self.proc: Optional[subprocess.Popen] = None
        self.logdir: Optional[Path] = None
        self.port = 0
        self.lock = threading.Lock()
        atexit.register(self.stop)

    def open(self, logdir: str) -> str:
        """The URL of a server showing `logdir` (started or restarted as needed). Raises TensorBoardError."""
        folder = Path(logdir.strip()).expanduser()
        if not logdir.strip():
            raise TensorBoardError("tensorboard.no_folder")
        with self.lock:
            if self.proc is not None and self.proc.poll() is None and self.logdir == folder:
                return self.url
            self._stop_locked()
            folder.mkdir(parents=True, exist_ok=True)
            self.port = _free_port()
            self.output = tempfile.TemporaryFile()  # TensorBoard's messages (a pipe nobody reads would fill up)
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tensorboard.main", "--logdir", str(folder), "--host", "127.0.0.1",
                 "--port", str(self.port)], stdout=self.output, stderr=subprocess.STDOUT)
            self.logdir = folder
            self._wait_until_serving()
            return self.url

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        with self.lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None

    def _wait_until_serving(self) -> None:
        deadline = time.time() + START_TIMEOUT_SEC
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self.output.seek(0)
                error = self.output.read().decode("utf-8", "replace").strip().splitlines()
                raise TensorBoardError("tensorboard.failed", error=error[-1] if error else f"exit {self.proc.returncode}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.3)
        self._stop_locked()
        raise TensorBoardError("tensorboard.failed", error=f"not serving after {START_TIMEOUT_SEC} s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVER = TensorBoardServer()
