"""The GPU check: one command on a CUDA machine that trains the real engine on SD1.5- and SDXL-architecture
random weights and writes every figure to one JSON file. Numbers for the notes, not a test.

    python bench/gpu_check.py --out $OUT --wheels wheels/     # on the GPU machine (about 8 minutes)
    python bench/gpu_check.py --out /tmp/check --cpu-smoke     # here: the same code paths at toy size

Cases: SD1.5 at 512 px, batch 1 and 8, bf16 and fp16 (accelerate's loss scaling), SDPA and xformers (where it
imports), AdamW and bitsandbytes' AdamW8bit; SDXL at 1024 px, batch 1, bf16, gradient checkpointing, cached
text-encoder outputs, with and without fp8_base. For each: images per second, MFU, peak VRAM (allocated and
reserved), whether every loss was finite, and whether diffusers' `load_lora_weights` takes the saved LoRA with every module in it.

MFU counts a LoRA training step as 2x the forward pass: about 0.80 TFLOP per 512 px SD1.5 image and 6.76 TFLOP
per 1024 px SDXL image forward, against the card's dense bf16/fp16 peak (--peak-tflops; H100/H200 SXM: 989).

Packages the GPU machine lacks (it has torch, accelerate, peft and transformers, and no internet) come as
wheels downloaded on a machine with internet, for its python (3.12) and platform:

    pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \\
        -d wheels diffusers==0.42.1 bitsandbytes safetensors pillow importlib_metadata zipp regex xformers

`--wheels DIR` installs them with `pip install --no-index --no-deps --target <out>/site` (nothing else on
the machine changes). The results go to `<out>/gpu_check.json` (--out, or $GPU_CHECK_OUT).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))
FORWARD_TFLOP = {"sd15": 0.80, "sdxl": 6.76}  # per image at the family's check resolution
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16/fp16 (SXM)
WARMUP, TIMED = 3, 10


@dataclass
class Case:
    name: str
    family: str  # "sd15" | "sdxl"
    resolution: int
    batch: int
    precision: str  # mixed_precision: "bf16" | "fp16" | "no"
    attention: str = "sdpa"  # "sdpa" | "xformers"
    optimizer: str = "AdamW"
    gradient_checkpointing: bool = False
    cache_text_encoder_outputs: bool = False
    fp8_base: bool = False


@dataclass
class CaseResult:
    case: Case
    ok: bool = False
    error: str = ""
    s_per_step: Optional[float] = None
    images_per_s: Optional[float] = None
    mfu: Optional[float] = None
    peak_vram_allocated_gib: Optional[float] = None
    peak_vram_reserved_gib: Optional[float] = None
    losses_finite: Optional[bool] = None
    steps: int = 0
    lora_loads_in_diffusers: Optional[bool] = None
    lora_modules: dict = field(default_factory=dict)
    wall_s: float = 0.0


def gpu_cases(xformers: bool, bitsandbytes: bool) -> list[Case]:
    cases = [Case(f"sd15_512_b{b}_{p}_sdpa_adamw", "sd15", 512, b, p) for b in (1, 8) for p in ("bf16", "fp16")]
    if xformers:
        cases += [Case(f"sd15_512_b{b}_bf16_xformers_adamw", "sd15", 512, b, "bf16", "xformers") for b in (1, 8)]
    if bitsandbytes:
        cases += [Case(f"sd15_512_b{b}_bf16_sdpa_adamw8bit", "sd15", 512, b, "bf16", optimizer="AdamW8bit")
                  for b in (1, 8)]
    cases += [Case(f"sdxl_1024_b1_bf16_gc_cached_te{'_fp8' if fp8 else ''}", "sdxl", 1024, 1, "bf16",
                   gradient_checkpointing=True, cache_text_encoder_outputs=True, fp8_base=fp8) for fp8 in (False, True)]
    return cases


def smoke_cases(bitsandbytes: bool) -> list[Case]:
    """The GPU cases' code paths at toy size on the CPU (mixed precision falls back to fp32 there)."""
    cases = [Case("smoke_sd1_64_b1_bf16_adamw", "sd15", 64, 1, "bf16"),
             Case("smoke_sd1_64_b2_fp16_adamw", "sd15", 64, 2, "fp16")]
    if bitsandbytes:
        cases.append(Case("smoke_sd1_64_b2_bf16_adamw8bit", "sd15", 64, 2, "bf16", optimizer="AdamW8bit"))
    cases.append(Case("smoke_sdxl_64_b1_bf16_gc_cached_te_fp8", "sdxl", 64, 1, "bf16", gradient_checkpointing=True,
                      cache_text_encoder_outputs=True, fp8_base=True))
    return cases


# ---- inputs ---------------------------------------------------------------------------------------------
def install_wheels(wheels: Path, site: Path) -> None:
    """The missing packages, into a folder of our own (nothing installed on the machine changes)."""
    files = sorted(str(p) for p in wheels.glob("*.whl"))
    if files:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target",
                        str(site), *files], check=True)


def build_model(family: str, smoke: bool, work: Path) -> Path:
    if smoke:
        from trainer.tiny import save_tiny_model

        dest = work / f"tiny-{family}"
        return dest if (dest / "model_index.json").exists() else save_tiny_model(dest, "sdxl" if family == "sdxl"
                                                                                  else "sd1")
    from bench_train import build_sd15_random, build_sdxl_random

    return (build_sdxl_random if family == "sdxl" else build_sd15_random)(work / f"{family}-random")


def build_images(resolution: int, work: Path) -> Path:
    from trainer.tiny import make_image_folder

    data = work / f"img{resolution}"
    if not data.exists():
        make_image_folder(data / "8_sks disc", 8, sizes=[(resolution, resolution)], caption="sks disc, red circle")
    return data


# ---- one case -------------------------------------------------------------------------------------------
def run_case(case: Case, model: Path, data: Path, work: Path, env: dict, peak_tflops: Optional[float]) -> CaseResult:
    from trainer.config import TrainConfig
    from trainer.events import events_path, read_events

    result, t0 = CaseResult(case), time.time()
    out = work / case.name
    out.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig(pretrained_model_name_or_path=str(model), train_data_dir=str(data), output_dir=str(out),
                      output_name="lora", resolution=str(case.resolution), enable_bucket=False,
                      train_batch_size=case.batch, mixed_precision=case.precision, save_precision="fp16",
                      max_train_steps=WARMUP + TIMED + 1, save_every_n_epochs=0, network_dim=8, network_alpha=8,
                      optimizer_type=case.optimizer, learning_rate=1e-4, lr_scheduler="constant",
                      cache_latents=True, xformers=case.attention == "xformers", sdpa=case.attention == "sdpa",
                      gradient_checkpointing=case.gradient_checkpointing,
                      cache_text_encoder_outputs=case.cache_text_encoder_outputs,
                      network_train_unet_only=case.cache_text_encoder_outputs, fp8_base=case.fp8_base, seed=0)
    cfg.save(out / "run.json")
    log = out / "steps.log"
    proc = subprocess.run([sys.executable, str(BENCH / "step_clock.py"), "-m", "trainer", "--config",
                           str(out / "run.json"), "--quiet"], cwd=ROOT, capture_output=True, text=True,
                          env=dict(env, BENCH_STEP_LOG=str(log)), timeout=900)
    events = read_events(events_path(out, "lora"))
    done = [e for e in events if e["type"] == "done"]
    if proc.returncode != 0 or not done or done[-1]["status"] != "completed":
        errors = [e.get("message", "") for e in events if e["type"] == "error"]
        result.error = (errors[-1] if errors else "") or proc.stderr[-2000:]
        result.wall_s = time.time() - t0
        return result
    losses = [e["loss"] for e in events if e["type"] == "step"]
    times = [float(line) for line in log.read_text().split()][WARMUP:]
    result.s_per_step = statistics.median(b - a for a, b in zip(times, times[1:]))
    result.images_per_s = case.batch / result.s_per_step
    if peak_tflops:
        result.mfu = 2 * FORWARD_TFLOP[case.family] * result.images_per_s / peak_tflops
    memory = proc.stderr.rsplit("BENCH_CUDA_MEM_BYTES", 1)
    if len(memory) == 2:
        allocated, reserved = (int(v) for v in memory[1].split()[:2])
        result.peak_vram_allocated_gib, result.peak_vram_reserved_gib = allocated / 2**30, reserved / 2**30
    result.losses_finite, result.steps = all(l == l and abs(l) != float("inf") for l in losses), len(losses)
    result.lora_modules = lora_loads_in_diffusers(model, out / "lora.safetensors", case.family)
    result.lora_loads_in_diffusers = result.lora_modules["in_file"] == result.lora_modules["loaded"] > 0
    result.ok = bool(result.losses_finite and result.lora_loads_in_diffusers)
    result.wall_s = time.time() - t0
    return result


def lora_loads_in_diffusers(model: Path, lora: Path, family: str) -> dict:
    """diffusers' own loader on our file: how many LoRA modules the file has and how many it attached."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from safetensors import safe_open

    with safe_open(str(lora), "pt") as f:
        in_file = sum(key.endswith(".lora_down.weight") for key in f.keys())
    pipeline = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    pipe = pipeline.from_pretrained(model, **({} if family == "sdxl" else {"safety_checker": None}))
    pipe.load_lora_weights(str(lora.parent), weight_name=lora.name)
    parts = [pipe.unet, pipe.text_encoder] + ([pipe.text_encoder_2] if family == "sdxl" else [])
    loaded = sum(1 for part in parts for module in part.modules() if getattr(module, "lora_A", None))
    return {"in_file": in_file, "loaded": loaded}


# ---- the whole check ------------------------------------------------------------------------------------
def machine_facts() -> dict[str, Any]:
    import torch

    facts: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.cuda.is_available(), "python": sys.version}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts.update(device=props.name, vram_gib=props.total_memory / 2**30, cuda_version=torch.version.cuda)
    for name in ("diffusers", "transformers", "peft", "accelerate", "bitsandbytes", "xformers"):
        try:
            facts[name] = __import__(name).__version__
        except Exception as exc:  # noqa: BLE001 - a missing optional package is a fact too
            facts[name] = f"not importable: {type(exc).__name__}"
    return facts


def peak_for(device: str, given: Optional[float]) -> Optional[float]:
    return given or next((peak for name, peak in PEAK_TFLOPS.items() if name in device), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=os.environ.get("GPU_CHECK_OUT"), help="results folder")
    ap.add_argument("--wheels", type=Path, help="folder of wheels to install first (into <out>/site)")
    ap.add_argument("--cpu-smoke", action="store_true", help="toy-size cases on the CPU (same code paths)")
    ap.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak (default: known cards)")
    ap.add_argument("--only", default="", help="comma-separated case names (default: all)")
    ap.add_argument("--budget-s", type=float, default=480, help="start no case after this many seconds")
    args = ap.parse_args()
    if args.out is None:
        raise SystemExit("give --out or set GPU_CHECK_OUT")
    start = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    if args.wheels:
        site = args.out / "site"
        install_wheels(args.wheels, site)
        sys.path.insert(0, str(site))
        env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    facts = machine_facts()
    has_bnb = not str(facts["bitsandbytes"]).startswith("not")
    cases = smoke_cases(has_bnb) if args.cpu_smoke else gpu_cases(
        not str(facts["xformers"]).startswith("not"), has_bnb)
    if args.only:
        cases = [c for c in cases if c.name in args.only.split(",")]
    peak = None if args.cpu_smoke else peak_for(str(facts.get("device", "")), args.peak_tflops)
    work = args.out / "work"
    results = []
    for case in cases:
        if time.time() - start > args.budget_s:
            results.append(CaseResult(case, error=f"not run: the {args.budget_s:.0f} s budget was spent"))
            continue
        model = build_model(case.family, args.cpu_smoke, work)
        result = run_case(case, model, build_images(case.resolution, work), work, env, peak)
        print(json.dumps(asdict(result)), flush=True)
        results.append(result)
    report = {"machine": facts, "peak_tflops": peak, "wall_s": time.time() - start,
              "cases": [asdict(r) for r in results]}
    path = args.out / "gpu_check.json"
    path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
