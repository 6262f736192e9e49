"""Runs one LoRA tool at a time in a subprocess: `python -m trainer.tools <tool> ...`.

The web process never imports torch, so the tools run as the CLI, as a user would type them. The
report comes back as JSON (`--json FILE`, or stdout for `inspect --json`), the progress as
`PROGRESS done/total` lines on stderr (`--progress_lines`), a problem as the CLI's `error: ...` line.
The run belongs to the server (like the training job): the page only follows it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from lora_gui import APP_DIR

PROGRESS_LINE = re.compile(r"^PROGRESS (\d+)/(\d+)\s*$")


class ToolBusy(Exception):
    """Another tool run is still going."""

    def __init__(self, tool: str, elapsed: float):
        super().__init__(tool)
        self.tool = tool
        self.elapsed = elapsed


@dataclass
class ToolResult:
    """What one run looks like to the page at one moment."""

    tool: str
    running: bool
    elapsed: float
    progress: Optional[tuple[int, int]] = None  # (done, total) modules
    exit_code: Optional[int] = None
    report: Optional[dict[str, Any]] = None  # ToolReport / InspectReport .to_dict()
    error: str = ""  # the tool's own message (exit status 1: a problem with inputs or outputs)
    crash: str = ""  # the last line of an unexpected failure (never the whole traceback)
    save_to: Optional[str] = None

    @property
    def ok(self) -> bool:
        return not self.running and self.exit_code == 0 and self.report is not None


def tool_command(argv: list[str], report_path: Optional[Path]) -> list[str]:
    """The full command line: the tool's arguments plus the runner's machine-readable outputs."""
    command = [sys.executable, "-m", "trainer.tools", *argv]
    if argv and argv[0] != "inspect":  # inspect --json prints the report on stdout
        command += ["--progress_lines"]
        if report_path is not None:
            command += ["--json", str(report_path)]
    return command


@dataclass
class _Run:
    tool: str
    proc: subprocess.Popen
    folder: Path
    started: float
    save_to: Optional[str]
    handles: list[Any] = field(default_factory=list)
    result: Optional[ToolResult] = None  # set once when the process has ended

    @property
    def report_path(self) -> Path:
        return self.folder / "report.json"

    @property
    def stdout_path(self) -> Path:
        return self.folder / "stdout.txt"

    @property
    def stderr_path(self) -> Path:
        return self.folder / "stderr.txt"


class ToolRunner:
    """The server's one tool run at a time. Thread-safe; every page may poll it by run id."""

    KEEP_RESULTS = 8  # finished runs whose results a page may still ask for

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._runs: dict[int, _Run] = {}
        self._current: Optional[int] = None
        self._next_id = 1

    def start(self, argv: list[str], *, save_to: Optional[str] = None) -> int:
        """Start `python -m trainer.tools argv...`; returns the run id. Raises ToolBusy or OSError."""
        with self.lock:
            current = self._runs.get(self._current) if self._current is not None else None
            if current is not None and current.proc.poll() is None:
                raise ToolBusy(current.tool, time.time() - current.started)
            if current is not None:
                self._collect(current)
            folder = Path(tempfile.mkdtemp(prefix="lora-gui-tool-"))
            out = open(folder / "stdout.txt", "w", encoding="utf-8")
            err = open(folder / "stderr.txt", "w", encoding="utf-8")
            env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
            try:
                proc = subprocess.Popen(tool_command(argv, folder / "report.json"), cwd=str(APP_DIR), stdout=out,
                                        stderr=err, stdin=subprocess.DEVNULL, env=env)
            except OSError:
                out.close()
                err.close()
                shutil.rmtree(folder, ignore_errors=True)
                raise
            run_id = self._next_id
            self._next_id += 1
            self._runs[run_id] = _Run(argv[0], proc, folder, time.time(), save_to, handles=[out, err])
            self._current = run_id
            for old in sorted(self._runs)[:-self.KEEP_RESULTS]:
                del self._runs[old]
            return run_id

    def poll(self, run_id: int) -> Optional[ToolResult]:
        """The state of run `run_id`; None when it is unknown (or too old)."""
        with self.lock:
            run = self._runs.get(run_id)
            if run is None:
                return None
            if run.result is not None:
                return run.result
            if run.proc.poll() is None:
                return ToolResult(run.tool, True, time.time() - run.started, progress=_progress(run.stderr_path),
                                  save_to=run.save_to)
            return self._collect(run)

    def busy(self) -> bool:
        with self.lock:
            current = self._runs.get(self._current) if self._current is not None else None
            return current is not None and current.proc.poll() is None

    def wait(self, run_id: int, timeout: float) -> Optional[ToolResult]:
        """Poll until the run ends or `timeout` passes (for tests and scripts)."""
        deadline = time.time() + timeout
        while True:
            result = self.poll(run_id)
            if result is None or not result.running or time.time() >= deadline:
                return result
            time.sleep(0.1)

    def _collect(self, run: _Run) -> ToolResult:
        """Read what an ended process left: the report, or its error; then remove its files."""
        if run.result is not None:
            return run.result
        code = run.proc.wait()
        for handle in run.handles:
            handle.close()
        stdout = _read(run.stdout_path)
        stderr = _read(run.stderr_path)
        result = ToolResult(run.tool, False, time.time() - run.started, progress=_progress(run.stderr_path),
                            exit_code=code, save_to=run.save_to)
        if code == 0:
            result.report = _report(run.tool, stdout, run.report_path)
            if result.report is None:
                result.crash = "the tool wrote no report"
        elif code == 1 and _error_line(stderr):
            result.error = _error_line(stderr)
        else:
            result.crash = _last_line(stderr) or _last_line(stdout)
        run.result = result
        shutil.rmtree(run.folder, ignore_errors=True)
        return result

    def shutdown(self) -> None:
        """On server exit: end a tool that is still running (it writes atomically: no partial file)."""
        with self.lock:
            for run in self._runs.values():
                if run.proc.poll() is None:
                    run.proc.terminate()


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _progress(stderr_path: Path) -> Optional[tuple[int, int]]:
    last = None
    for line in _read(stderr_path).splitlines():
        match = PROGRESS_LINE.match(line)
        if match:
            last = (int(match.group(1)), int(match.group(2)))
    return last


def _report(tool: str, stdout: str, report_path: Path) -> Optional[dict[str, Any]]:
    text = stdout if tool == "inspect" else _read(report_path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _error_line(stderr: str) -> str:
    """The CLI's one `error: ...` line (exit status 1), without the prefix."""
    for line in reversed(stderr.splitlines()):
        if line.startswith("error: "):
            return line[len("error: "):].strip()
    return ""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not PROGRESS_LINE.match(line)]
    return lines[-1][:500] if lines else ""
