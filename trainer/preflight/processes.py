"""Pre-flight rules of the Accelerate launch fields: processes, machines and GPUs."""

from __future__ import annotations

import re
from typing import Iterator

from trainer.findings import Finding
from trainer.preflight.registry import ERROR, Context, issue, rule

GPU_IDS = re.compile(r"^\s*\d+\s*(,\s*\d+\s*)*$")


@rule("processes_per_machine", "main_process_ip_missing", "machine_rank_out_of_range")
def machines(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    if cfg.num_processes % cfg.num_machines:
        yield issue("num_processes", ERROR, "processes_per_machine",
                    f"{cfg.num_processes} processes cannot be shared out evenly over {cfg.num_machines} machines. "
                    "Set the number of processes to a multiple of the number of machines.",
                    processes=cfg.num_processes, machines=cfg.num_machines)
    if cfg.num_machines > 1 and not cfg.main_process_ip.strip():
        yield issue("main_process_ip", ERROR, "main_process_ip_missing",
                    "Training on several machines needs the address of machine 0. Enter its IP address.")
    if cfg.machine_rank >= cfg.num_machines:
        yield issue("machine_rank", ERROR, "machine_rank_out_of_range",
                    f"Machine rank {cfg.machine_rank} is not one of the {cfg.num_machines} machine(s) (0 to "
                    f"{cfg.num_machines - 1}). Give each machine its own rank from 0 up.",
                    rank=cfg.machine_rank, machines=cfg.num_machines)


@rule("gpu_ids_invalid", "gpu_ids_too_few")
def gpus(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    text = cfg.gpu_ids.strip()
    if not text:
        return
    if not GPU_IDS.match(text):
        yield issue("gpu_ids", ERROR, "gpu_ids_invalid",
                    f"GPU IDs '{text}' is not a list of GPU numbers. Write them like 0,1 (or leave it empty for "
                    "all GPUs).", gpu_ids=text)
        return
    per_machine = max(1, cfg.num_processes // max(1, cfg.num_machines))
    count = len({int(x) for x in text.split(",")})
    if cfg.num_processes > 1 and count < per_machine:
        yield issue("gpu_ids", ERROR, "gpu_ids_too_few",
                    f"{per_machine} processes per machine need as many GPUs, and GPU IDs names {count}. Name more "
                    "GPUs, or lower the number of processes.", processes=per_machine, gpus=count)
