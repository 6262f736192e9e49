"""Benchmark: resizing / SVD-merging a full SD1.5 LoCon LoRA, ours vs per-module dense SVDs.

    .venv/bin/python bench/bench_tools.py                 # our resize + svd_merge, naive sampled per shape
    .venv/bin/python bench/bench_tools.py --naive all     # time the naive loop over every module (slow)
    .venv/bin/python bench/bench_tools.py --kohya         # also sd-scripts' full_matrices=True SVD, per shape
    .venv/bin/python bench/bench_tools.py --extract       # dense extract SVDs: randomised vs exact, per shape

The LoRA has every module sd-scripts creates on SD1.5 with conv_dim set (72 text-encoder + 278
U-Net modules, shapes derived from the architecture; see trainer/tools/synthetic.py), random
factors, rank 32 / alpha 16 for linear and conv modules alike.

"naive" = per module, form ΔW = U·D densely and take its thin SVD (tall orientation, the fastest dense
variant); "sd-scripts" (--kohya) = exactly resize_lora.py's call, torch.linalg.svd(ΔW) with full matrices.
The naive time is measured on one module per distinct shape and multiplied by the number of modules
of that shape (SVD time depends on the shape only), unless --naive all. Results go to stdout and to
bench-out/bench_tools.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import torch  # noqa: E402

from trainer.tools.lowrank import dense_topk_svd  # noqa: E402
from trainer.tools.merge import svd_merge_loras  # noqa: E402
from trainer.tools.resize import resize_lora  # noqa: E402
from trainer.tools.synthetic import random_lora, sd15_module_shapes  # noqa: E402


CPU_TIMES: dict[str, float] = {}


def timed(fn, repeat: int = 1, label: str = ""):
    """Best wall time of `repeat` runs (and the process CPU time of that run, kept in CPU_TIMES[label]).
    CPU time matters on a shared machine: wall time there depends on what else runs."""
    best, result = float("inf"), None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        wall = time.perf_counter() - t0
        if wall < best:
            best = wall
            if label:
                CPU_TIMES[label] = time.process_time() - c0
    return best, result


def naive_resize_module(module, k: int, full_matrices: bool) -> torch.Tensor:
    """Dense SVD of ΔW. full_matrices=True: exactly sd-scripts' call (torch.linalg.svd(W), W as is).
    False: the best dense variant (thin SVD of the tall orientation; torch's CPU SVD of a wide matrix
    is several times slower than of its transpose)."""
    r = module.down.shape[0]
    W = module.up.reshape(module.up.shape[0], r).float() @ module.down.reshape(r, -1).float()
    if full_matrices:
        P, S, Qh = torch.linalg.svd(W)
        return (P[:, :k] * S[:k]) @ Qh[:k]
    wide = W.shape[0] < W.shape[1]
    P, S, Qh = torch.linalg.svd(W.T if wide else W, full_matrices=False)
    out = (P[:, :k] * S[:k]) @ Qh[:k]
    return out.T if wide else out


def naive_time(lora, k: int, mode: str, full_matrices: bool) -> tuple[float, float, dict]:
    """(wall seconds, CPU seconds, per-shape rows) of the dense per-module SVD for the whole file."""
    groups: dict[tuple, list] = {}
    for m in lora.modules.values():
        groups.setdefault((m.up.shape[0], m.down[0].numel()), []).append(m)
    total, total_cpu, per_shape = 0.0, 0.0, {}
    for shape, mods in sorted(groups.items(), key=lambda kv: -kv[0][0] * kv[0][1]):
        c0 = time.process_time()
        if mode == "all":
            t, _ = timed(lambda: [naive_resize_module(m, k, full_matrices) for m in mods])
            cpu = time.process_time() - c0
        else:
            t1, _ = timed(lambda: naive_resize_module(mods[0], k, full_matrices))
            t, cpu = t1 * len(mods), (time.process_time() - c0) * len(mods)
        per_shape[f"{shape[0]}x{shape[1]}"] = {"modules": len(mods), "seconds": t, "cpu_seconds": cpu}
        total += t
        total_cpu += cpu
    return total, total_cpu, per_shape


def check_against_naive(lora, out, k: int, names) -> float:
    worst = 0.0
    for name in names:
        src, new = lora.modules[name], out.modules[name]
        ref = naive_resize_module(src, k, False).double() * src.scale
        got = (new.up.reshape(new.up.shape[0], -1).double() @ new.down.reshape(new.rank, -1).double()) * new.scale
        worst = max(worst, float((ref - got).abs().max() / ref.abs().max()))
    return worst


def extract_bench(shapes, k: int, conv_k: int) -> dict:
    """Per distinct shape: top-k SVD of a dense random ΔW, randomised vs full, times the module count."""
    counts = Counter((s.out_features, s.flat_in, s.is_spatial) for s in shapes.values())
    rows, t_fast, t_exact = {}, 0.0, 0.0
    gen = torch.Generator().manual_seed(0)
    for (m, n, spatial), count in sorted(counts.items(), key=lambda kv: -kv[0][0] * kv[0][1]):
        kk = conv_k if spatial else k
        W = torch.randn(m, n, generator=gen) * torch.logspace(0, -3, n)  # decaying column energy
        tf, (P, S, Qh) = timed(lambda: dense_topk_svd(W, kk))
        te, (P2, S2, Qh2) = timed(lambda: dense_topk_svd(W, kk, exact=True))
        err_f = float(torch.linalg.matrix_norm(W - (P * S) @ Qh))
        err_e = float(torch.linalg.matrix_norm(W - (P2 * S2) @ Qh2))
        rows[f"{m}x{n}"] = {"modules": count, "randomised_s": tf * count, "exact_s": te * count,
                            "error_ratio": err_f / err_e}
        t_fast += tf * count
        t_exact += te * count
    return {"randomised_total_s": t_fast, "exact_total_s": t_exact, "per_shape": rows}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--new_rank", type=int, default=8)
    ap.add_argument("--naive", choices=("sample", "all", "none"), default="sample")
    ap.add_argument("--kohya", action="store_true", help="also time full_matrices=True SVDs (sd-scripts), per shape")
    ap.add_argument("--extract", action="store_true")
    ap.add_argument("--out", default="bench-out/bench_tools.json")
    args = ap.parse_args()

    results: dict = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    shapes = sd15_module_shapes(conv=True)
    kinds = Counter(s.kind for s in shapes.values())
    print(f"SD1.5 LoCon LoRA: {len(shapes)} modules {dict(kinds)}, rank {args.rank}, {torch.get_num_threads()} threads")
    t_build, lora = timed(lambda: random_lora(shapes, args.rank, args.rank / 2, seed=0))
    params = sum(m.down.numel() + m.up.numel() for m in lora.modules.values())
    print(f"built in {t_build:.1f} s, {params / 1e6:.1f} M parameters")
    results.update(modules=len(shapes), kinds=dict(kinds), rank=args.rank, params=params)

    t_fixed, (out, _) = timed(lambda: resize_lora(lora, args.new_rank), repeat=3, label="resize")
    t_dyn, (out_dyn, rep_dyn) = timed(
        lambda: resize_lora(lora, args.rank, dynamic_method="sv_fro", dynamic_param=0.9), repeat=3, label="sv_fro")
    sample = [n for n in list(lora.modules)[::25]]
    err = check_against_naive(lora, out, args.new_rank, sample)
    print(f"ours  resize to rank {args.new_rank}:         {t_fixed:8.2f} s wall, {CPU_TIMES['resize']:.2f} s CPU "
          f"(max rel. deviation from naive {err:.1e})")
    print(f"ours  resize sv_fro 0.9 (cap {args.rank}):   {t_dyn:8.2f} s wall, {CPU_TIMES['sv_fro']:.2f} s CPU (mean rank "
          f"{sum(m.rank for m in rep_dyn.modules) / len(rep_dyn.modules):.1f})")
    results.update(ours_resize_fixed_s=t_fixed, ours_resize_sv_fro_s=t_dyn, max_rel_deviation=err,
                   ours_resize_fixed_cpu_s=CPU_TIMES["resize"], ours_resize_sv_fro_cpu_s=CPU_TIMES["sv_fro"])

    other = random_lora(shapes, args.rank, args.rank / 2, seed=1)
    t_merge, _ = timed(lambda: svd_merge_loras([lora, other], [0.6, 0.4], args.rank), repeat=2, label="merge")
    print(f"ours  svd_merge 2 × rank {args.rank} -> {args.rank}:  {t_merge:8.2f} s wall, {CPU_TIMES['merge']:.2f} s CPU")
    results.update(ours_svd_merge_s=t_merge, ours_svd_merge_cpu_s=CPU_TIMES["merge"])

    if args.naive != "none":
        t_naive, c_naive, per_shape = naive_time(lora, args.new_rank, args.naive, False)
        how = "measured" if args.naive == "all" else "per-shape sample × count"
        print(f"naive dense thin SVD per module ({how}): {t_naive:8.1f} s wall, {c_naive:.1f} s CPU "
              f"-> speed-up {t_naive / t_fixed:.0f}× wall, {c_naive / CPU_TIMES['resize']:.0f}× CPU")
        results.update(naive_thin_svd_s=t_naive, naive_thin_svd_cpu_s=c_naive, naive_mode=args.naive,
                       naive_per_shape=per_shape)
    if args.kohya:
        t_k, c_k, per_shape_k = naive_time(lora, args.new_rank, "sample", True)
        print(f"sd-scripts-style full_matrices=True SVD (per-shape sample × count): {t_k:8.1f} s wall, "
              f"{c_k:.1f} s CPU -> speed-up {t_k / t_fixed:.0f}× wall, {c_k / CPU_TIMES['resize']:.0f}× CPU")
        results.update(kohya_full_svd_s=t_k, kohya_full_svd_cpu_s=c_k, kohya_per_shape=per_shape_k)
    if args.extract:
        ex = extract_bench(shapes, args.rank, args.rank)
        worst = max(r["error_ratio"] for r in ex["per_shape"].values())
        print(f"extract top-{args.rank} SVDs of dense ΔW: randomised {ex['randomised_total_s']:.1f} s, "
              f"exact {ex['exact_total_s']:.1f} s (worst error ratio randomised/exact {worst:.4f})")
        results["extract"] = ex

    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
