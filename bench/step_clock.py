"""Run a trainer with a clock on its optimizer steps (used by bench_vs_sd_scripts.py for both trainers).

    BENCH_STEP_LOG=steps.log python bench/step_clock.py -m trainer --config run.json
    BENCH_STEP_LOG=steps.log python bench/step_clock.py path/to/train_network.py --args...

A global post-hook on torch.optim.Optimizer.step writes the time of each optimizer step, one per line, to
$BENCH_STEP_LOG; at exit the process's peak RSS goes to stderr as `BENCH_MAXRSS_KB <n>`, and on a GPU the
peak CUDA memory as `BENCH_CUDA_MEM_BYTES <max allocated> <max reserved>`. With BENCH_PROFILE=<file>, steps
3 and 4 run under torch.profiler and its table of operators goes to that file. The same hook on
both trainers measures the same thing: the interval between two optimizer steps is one whole training step.
Only torch and the standard library are used, so it runs in either trainer's environment.
"""

from __future__ import annotations

import atexit
import os
import resource
import runpy
import sys
import time

from torch.optim.optimizer import register_optimizer_step_post_hook


def report_memory() -> None:
    print("BENCH_MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr, flush=True)
    cuda = getattr(sys.modules.get("torch"), "cuda", None)
    if cuda is not None and cuda.is_initialized():
        print("BENCH_CUDA_MEM_BYTES", cuda.max_memory_allocated(), cuda.max_memory_reserved(), file=sys.stderr,
              flush=True)


def profile_steps(table_path: str, first: int = 3, count: int = 2) -> None:
    """torch.profiler over optimizer steps first..first+count; the op table goes to `table_path` at exit."""
    from torch.profiler import ProfilerActivity, profile, schedule

    profiler = profile(activities=[ProfilerActivity.CPU], record_shapes=True,
                       schedule=schedule(wait=first - 1, warmup=1, active=count, repeat=1))
    register_optimizer_step_post_hook(lambda *_: profiler.step())
    profiler.start()

    def write_table() -> None:
        profiler.stop()
        averages = profiler.key_averages(group_by_input_shape=False)
        with open(table_path, "w", encoding="utf-8") as f:
            f.write(averages.table(sort_by="self_cpu_time_total", row_limit=60))

    atexit.register(write_table)


def main() -> None:
    log = open(os.environ["BENCH_STEP_LOG"], "a", buffering=1, encoding="utf-8")

    def note_step(_optimizer, _args, _kwargs) -> None:
        log.write(f"{time.perf_counter():.6f}\n")

    register_optimizer_step_post_hook(note_step)
    if os.environ.get("BENCH_PROFILE"):
        profile_steps(os.environ["BENCH_PROFILE"])
    atexit.register(report_memory)
    args = sys.argv[1:]
    if args[0] == "-m":
        sys.argv = [args[1], *args[2:]]
        sys.path.insert(0, os.getcwd())  # as `python -m` does
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = args
        sys.path.insert(0, os.path.dirname(os.path.abspath(args[0])))
        runpy.run_path(args[0], run_name="__main__")


if __name__ == "__main__":
    main()
