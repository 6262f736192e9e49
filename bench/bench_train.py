"""Training speed and memory benchmark (numbers for the notes, not a test).

Runs the real engine (`python -m trainer`) in a subprocess per setting and reports the median
seconds per step (steps after the first two) and the peak resident memory of that process.

    python bench/bench_train.py --tiny            # tiny SD1-shaped model, 64 px
    python bench/bench_train.py --sd15 --steps 6  # full SD1.5 architecture (random weights), 256 px
    python bench/bench_train.py --sdxl --steps 4  # full SDXL 1.0 base architecture (random weights), 256 px

The SDXL model (3.5 G parameters) is written once to <work>/sdxl-random in fp16 (about 7 GiB) and
trained in fp32 on the CPU, so a case needs about 16 GiB of RAM.

Reference (shared/reference/environment.md, same CPU): diffusers' example trainer 0.023 s/step (tiny, 64 px)
and 3.5 s/step, 5.8 GiB (SD1.5, 256 px); sd-scripts 2.41 s/step (UNet+TE, cached latents), 2.31 UNet only,
3.17 with gradient checkpointing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WRAPPER = r"""
import resource, subprocess, sys
rc = subprocess.call(sys.argv[1:])
print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
sys.exit(rc)
"""


def build_sd15_random(dest: Path) -> Path:
    """Full SD1.5 architecture with random weights, from the bundled configs (no download)."""
    if (dest / "model_index.json").exists():
        return dest
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from trainer.families.tokenizers import load_clip_tokenizer

    cfg_dir = ROOT / "trainer" / "families" / "configs" / "sd15"
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(json.loads((cfg_dir / "unet" / "config.json").read_text()))
    vae = AutoencoderKL.from_config(json.loads((cfg_dir / "vae" / "config.json").read_text()))
    te = CLIPTextModel(CLIPTextConfig(**json.loads((cfg_dir / "text_encoder" / "config.json").read_text())))
    sched = DDIMScheduler.from_config(json.loads((cfg_dir / "scheduler" / "scheduler_config.json").read_text()))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=load_clip_tokenizer(), unet=unet,
                                   scheduler=sched, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(dest, safe_serialization=True)
    return dest


def build_sdxl_random(dest: Path) -> Path:
    """Full SDXL 1.0 base architecture with random weights from the bundled configs, saved in fp16.

    Each part is cast to fp16 as soon as it is built, so building peaks near the UNet's fp32 size (10 GiB).
    """
    if (dest / "model_index.json").exists():
        return dest
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from trainer.families.tokenizers import load_clip_tokenizer

    cfg_dir = ROOT / "trainer" / "families" / "configs" / "sdxl"
    config = lambda part, name="config.json": json.loads((cfg_dir / part / name).read_text())  # noqa: E731
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(config("unet")).half()
    vae = AutoencoderKL.from_config(config("vae")).half()
    te1 = CLIPTextModel(CLIPTextConfig(**config("text_encoder"))).half()
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(**config("text_encoder_2"))).half()
    sched = EulerDiscreteScheduler.from_config(config("scheduler", "scheduler_config.json"))
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=load_clip_tokenizer(),
                                     tokenizer_2=load_clip_tokenizer(pad_token="!"), unet=unet, scheduler=sched,
                                     add_watermarker=False)
    pipe.save_pretrained(dest, safe_serialization=True)
    return dest


def run_case(name: str, model: Path, data: Path, work: Path, res: int, steps: int, **over) -> dict:
    from trainer.config import TrainConfig
    from trainer.events import events_path, read_events

    out = work / name
    cfg = TrainConfig(pretrained_model_name_or_path=str(model), train_data_dir=str(data), output_dir=str(out),
                      output_name="bench", resolution=str(res), enable_bucket=False, mixed_precision="no",
                      max_train_steps=steps, save_every_n_epochs=0, network_dim=8, network_alpha=8,
                      learning_rate=1e-4, lr_scheduler="constant", seed=0, **over)
    run_json = work / f"{name}.json"
    cfg.save(run_json)
    proc = subprocess.run([sys.executable, "-c", WRAPPER, sys.executable, "-m", "trainer", "--config",
                           str(run_json), "--quiet"], capture_output=True, text=True, cwd=ROOT)
    rss_kb = int(proc.stderr.rsplit("MAXRSS_KB", 1)[1].split()[0])
    events = read_events(events_path(out, "bench"))
    step_times = [e["sec_per_step"] for e in events if e["type"] == "step"]
    done = [e for e in events if e["type"] == "done"]
    if not done or done[-1]["status"] != "completed":
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    timed = step_times[2:] or step_times
    return {"case": name, "s_per_step": statistics.median(timed), "steps_timed": len(timed),
            "peak_rss_gib": rss_kb / 2**20, "wall_s": done[-1]["wall_time_sec"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--sd15", action="store_true")
    ap.add_argument("--sdxl", action="store_true")
    ap.add_argument("--sdxl-res", type=int, default=256, help="SDXL training resolution (multiple of 32)")
    ap.add_argument("--steps", type=int, default=0, help="optimizer steps per case (default 30 tiny, 6 sd15)")
    ap.add_argument("--work", type=Path, default=ROOT / "bench-out")
    args = ap.parse_args()
    from trainer.tiny import make_image_folder, save_tiny_model

    args.work.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        tmp = Path(tmp)
        if args.tiny or not (args.sd15 or args.sdxl):
            model = args.work / "tiny-sd1"
            if not (model / "model_index.json").exists():
                save_tiny_model(model, "sd1")
            data = tmp / "img64"
            make_image_folder(data / "1_sks disc", 8, caption="sks disc")
            steps = args.steps or 30
            for name, over in [
                ("tiny64 te+unet, cache", dict(cache_latents=True)),
                ("tiny64 te+unet, no cache", dict(cache_latents=False)),
                ("tiny64 unet attn only (reference setting)", dict(cache_latents=False, text_encoder_lr=0.0)),
                ("tiny64 unet only, cache", dict(cache_latents=True, text_encoder_lr=0.0)),
            ]:
                results.append(run_case(name.replace(" ", "_").replace(",", "").replace("(", "").replace(")", ""),
                                        model, data, tmp, 64, steps, **over) | {"case": name})
        if args.sd15:
            model = build_sd15_random(args.work / "sd15-random")
            data = tmp / "img256"
            make_image_folder(data / "1_sks disc", 4, sizes=[(256, 256)], caption="sks disc")
            steps = args.steps or 6
            for name, over in [
                ("sd15_256 te+unet, cache", dict(cache_latents=True)),
                ("sd15_256 unet only, cache", dict(cache_latents=True, text_encoder_lr=0.0)),
                ("sd15_256 te+unet, cache, grad ckpt", dict(cache_latents=True, gradient_checkpointing=True)),
                ("sd15_256 te+unet, no cache", dict(cache_latents=False)),
                ("sd15_256 unet only, no cache, grad ckpt", dict(cache_latents=False, text_encoder_lr=0.0,
                                                                 gradient_checkpointing=True)),
            ]:
                results.append(run_case(name.replace(" ", "_").replace(",", ""), model, data, tmp, 256, steps,
                                        **over) | {"case": name})
        if args.sdxl:
            model = build_sdxl_random(args.work / "sdxl-random")
            res = args.sdxl_res
            data = tmp / f"img{res}"
            make_image_folder(data / "1_sks disc", 4, sizes=[(res, res)], caption="sks disc")
            steps = args.steps or 4
            # Caching text-encoder outputs needs frozen text encoders, as in sd-scripts.
            cached = dict(cache_latents=True, network_train_unet_only=True, cache_text_encoder_outputs=True)
            for name, over in [
                (f"sdxl_{res} unet only, cached latents+TE outputs, grad ckpt", dict(cached, gradient_checkpointing=True)),
                (f"sdxl_{res} unet only, cached latents+TE outputs", cached),
            ]:
                results.append(run_case(name.replace(" ", "_").replace(",", "").replace("+", "_"), model, data,
                                        tmp, res, steps, **over) | {"case": name})
    print(f"{'case':60s} {'s/step':>8s} {'peak RSS GiB':>13s}")
    for r in results:
        print(f"{r['case']:60s} {r['s_per_step']:8.3f} {r['peak_rss_gib']:13.2f}")


if __name__ == "__main__":
    main()
