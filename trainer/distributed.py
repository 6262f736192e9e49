"""Several processes: `python -m trainer --config run.json` with num_processes > 1 (or several machines)
starts itself again through accelerate's launcher, which runs one engine process per GPU (or CPU process
on a machine without GPUs) and joins them into one process group. Torch-free: the web process builds the
same command for the page's Print command.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

LAUNCHED = "LORA_GUI_LAUNCHED"  # set in the launched processes' environment: they train, not relaunch


def wants_several_processes(cfg: Any) -> bool:
    return cfg.num_processes > 1 or cfg.num_machines > 1


def needs_launcher(cfg: Any) -> bool:
    """Whether this engine should hand the run to accelerate's launcher (and not train itself)."""
    if os.environ.get(LAUNCHED) == "1" or "LOCAL_RANK" in os.environ:
        return False  # already one of the launched processes (ours, or a user's `accelerate launch`)
    return wants_several_processes(cfg)


def launch_arguments(cfg: Any) -> list[str]:
    """`accelerate launch` options for the config's Accelerate fields (kohya_ss's names are accelerate's)."""
    args = ["--multi_gpu", "--num_processes", str(cfg.num_processes), "--num_machines", str(cfg.num_machines),
            "--machine_rank", str(cfg.machine_rank), "--mixed_precision", "no", "--dynamo_backend", "no"]
    if cfg.main_process_ip.strip():
        args += ["--main_process_ip", cfg.main_process_ip.strip()]
    if cfg.main_process_port:
        args += ["--main_process_port", str(cfg.main_process_port)]
    if cfg.gpu_ids.strip():
        args += ["--gpu_ids", cfg.gpu_ids.replace(" ", "")]
    if cfg.num_cpu_threads_per_process:
        args += ["--num_cpu_threads_per_process", str(cfg.num_cpu_threads_per_process)]
    return args


def launch_command(cfg: Any, config_path: Path, *, python: str = sys.executable,
                   engine_args: tuple[str, ...] = ()) -> list[str]:
    """The command that runs this config on every process of this machine. (The engine sets its own
    precision, so accelerate's `--mixed_precision` stays `no`; the engine's Accelerator decides.)"""
    return [python, "-m", "accelerate.commands.launch", *launch_arguments(cfg), "-m", "trainer",
            "--config", str(config_path), *engine_args]


def run_launcher(cfg: Any, config_path: Path, engine_args: tuple[str, ...]) -> int:
    """Run the launcher and wait; SIGINT/SIGTERM are passed on (each process then stops and the main one
    saves once). Returns this engine's exit code as one process would: the launcher reports a stop by
    signal as a failure (130), so the run's own `done` event decides where there is one."""
    from trainer.events import EventReader, events_path

    stream = EventReader(events_path(cfg.output_dir, cfg.output_name))
    stream.poll()  # only this run's events count
    env = dict(os.environ, **{LAUNCHED: "1"})
    proc = subprocess.Popen(launch_command(cfg, config_path, engine_args=engine_args), env=env)

    def forward(signum: int, _frame: Any) -> None:
        proc.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    code = proc.wait()
    done = [event for event in stream.poll() if event.get("type") == "done"]
    if done:
        return 0 if done[-1].get("status") in ("completed", "stopped") else 1
    return code
