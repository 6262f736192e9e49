"""Side by side with kohya sd-scripts: the same model, data and settings, runs alternating in one invocation
(ours, theirs, ours, theirs, ...). Numbers for the notes, not a test.

    python bench/bench_vs_sd_scripts.py --sd-scripts ~/sd-scripts --sd-python ~/sd-venv/bin/python

sd-scripts is not part of this project. Whoever benchmarks fetches it (github.com/kohya-ss/sd-scripts) and
gives it its own virtual environment, because its requirements pin older libraries than ours
(transformers 4.54, diffusers 0.32, accelerate 1.6; install torch first, pinned to the same version as ours):

    python3 -m venv ~/sd-venv && ~/sd-venv/bin/pip install torch==2.13.0
    ~/sd-venv/bin/pip install torch==2.13.0 accelerate==1.6.0 transformers==4.54.1 diffusers==0.32.1 \\
        safetensors==0.4.5 huggingface-hub==0.34.3 ftfy einops==0.7.0 toml voluptuous imagesize rich \\
        opencv-python-headless bitsandbytes lion-pytorch tensorboard sentencepiece
    ~/sd-venv/bin/pip install --no-deps -e ~/sd-scripts

What this script prepares under --work (once): the full SD1.5 architecture with random weights as one
single-file checkpoint both trainers load, 256 px captioned images, the CLIP tokenizer in the folder layout
sd-scripts' `--tokenizer_cache_dir` reads (it would download it otherwise), and a stand-in `torchvision` for
the two transforms sd-scripts imports (torchvision cannot be imported on a machine without its CUDA build);
the stand-in is on sd-scripts' PYTHONPATH only.

Both trainers run under the same clock (bench/step_clock.py): a global optimizer-step hook notes the time of
every optimizer step; a run's figure is the median interval between steps after the first `--warmup` steps.
Peak RSS is that of the trainer's process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
CLOCK = BENCH / "step_clock.py"
TOKENIZER_FOLDER = "openai_clip-vit-large-patch14"  # how sd-scripts names its cached tokenizer
RESOLUTION = 256
CAPTION = "sks disc, a red circle"

# The workloads of issue 12: rank 8, alpha 8, AdamW 1e-4 constant, batch 1, fp32, cached latents, SDPA.
CASES = {
    "a": ("UNet + text encoder LoRA", {}),
    "b": ("UNet only", {"unet_only": True}),
    "c": ("UNet + text encoder, gradient checkpointing", {"gradient_checkpointing": True}),
}


@dataclass
class Workload:
    model: Path
    data: Path
    steps: int
    unet_only: bool = False
    gradient_checkpointing: bool = False


@dataclass
class RunResult:
    trainer: str
    case: str
    s_per_step: float
    intervals: list[float] = field(default_factory=list)
    peak_rss_gib: float = 0.0


# ---- preparing the shared inputs -----------------------------------------------------------------------
def prepare(work: Path) -> tuple[Path, Path, Path, Path]:
    """(model file, image folder, tokenizer cache, stand-in folder), built once under `work`."""
    work.mkdir(parents=True, exist_ok=True)
    return _model_file(work), _images(work), _tokenizer_cache(work), _torchvision_stand_in(work)


def _model_file(work: Path) -> Path:
    path = work / "sd15-random.safetensors"
    if not path.exists():
        from diffusers import StableDiffusionPipeline

        from bench_train import build_sd15_random
        from trainer.families.single_file import save_single_file

        folder = build_sd15_random(work / "sd15-random")
        save_single_file(StableDiffusionPipeline.from_pretrained(folder, safety_checker=None), path, "sd1")
    return path


def _images(work: Path) -> Path:
    data = work / "img256"
    if not data.exists():
        from trainer.tiny import make_image_folder

        make_image_folder(data / "10_sks disc", 4, sizes=[(RESOLUTION, RESOLUTION)], caption=CAPTION)
    return data


def _tokenizer_cache(work: Path) -> Path:
    """The bundled CLIP vocabulary and merges with a tokenizer config that transformers 4 reads too."""
    import shutil

    from trainer.families.tokenizers import CLIP_BPE_DIR

    folder = work / "tokenizers" / TOKENIZER_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(CLIP_BPE_DIR / name, folder / name)
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "pad_token": "<|endoftext|>",
              "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder.parent


STAND_IN = {
    "__init__.py": "from . import transforms  # noqa: F401\n",
    "transforms/__init__.py": '''"""The transforms sd-scripts' train_util uses, on numpy and torch (benchmark stand-in)."""
import numpy as np
import torch

from . import functional  # noqa: F401


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, value):
        for transform in self.transforms:
            value = transform(value)
        return value


class ToTensor:
    def __call__(self, picture):
        array = np.asarray(picture, dtype=np.float32) / 255.0
        if array.ndim == 2:
            array = array[:, :, None]
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


class Normalize:
    def __init__(self, mean, std):
        self.mean, self.std = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]

    def __call__(self, tensor):
        return (tensor - self.mean) / self.std
''',
    "transforms/functional.py": '''import numpy as np
import torch


def pil_to_tensor(picture):
    array = np.asarray(picture)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def gaussian_blur(*_args, **_kwargs):
    raise NotImplementedError("not used by the benchmark (the stand-in has only what it needs)")
''',
}


def _torchvision_stand_in(work: Path) -> Path:
    root = work / "stand-ins"
    for name, text in STAND_IN.items():
        path = root / "torchvision" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


# ---- the two command lines -----------------------------------------------------------------------------
def ours_command(load: Workload, out: Path) -> list[str]:
    from trainer.config import TrainConfig

    cfg = TrainConfig(pretrained_model_name_or_path=str(load.model), train_data_dir=str(load.data),
                      output_dir=str(out), output_name="ours", resolution=str(RESOLUTION), enable_bucket=False,
                      train_batch_size=1, mixed_precision="no", save_precision="float", max_train_steps=load.steps,
                      save_every_n_epochs=0, network_dim=8, network_alpha=8, optimizer_type="AdamW",
                      learning_rate=1e-4, lr_scheduler="constant", cache_latents=True, sdpa=True, seed=0,
                      text_encoder_lr=0.0 if load.unet_only else None,
                      gradient_checkpointing=load.gradient_checkpointing, max_data_loader_n_workers=0)
    run_json = out / "run.json"
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(run_json)
    return ["-m", "trainer", "--config", str(run_json), "--quiet"]


def theirs_command(load: Workload, out: Path, sd_scripts: Path, tokenizers: Path) -> list[str]:
    args = [str(sd_scripts / "train_network.py"), "--pretrained_model_name_or_path", str(load.model),
            "--train_data_dir", str(load.data), "--output_dir", str(out), "--output_name", "theirs",
            "--resolution", str(RESOLUTION), "--train_batch_size", "1", "--mixed_precision", "no",
            "--save_precision", "float", "--max_train_steps", str(load.steps), "--network_module", "networks.lora",
            "--network_dim", "8", "--network_alpha", "8", "--optimizer_type", "AdamW", "--learning_rate", "1e-4",
            "--lr_scheduler", "constant", "--cache_latents", "--sdpa", "--seed", "0", "--caption_extension", ".txt",
            "--tokenizer_cache_dir", str(tokenizers), "--max_data_loader_n_workers", "0"]
    if load.unet_only:
        args.append("--network_train_unet_only")
    if load.gradient_checkpointing:
        args.append("--gradient_checkpointing")
    return args


def timed_run(python: str, args: list[str], *, cwd: Path, env: dict, log: Path, warmup: int) -> tuple[list, float]:
    """Run one trainer under the step clock: (intervals after the warm-up steps, peak RSS in GiB)."""
    env = dict(env, BENCH_STEP_LOG=str(log), OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", str(os.cpu_count())))
    proc = subprocess.run([python, str(CLOCK), *args], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{python} {' '.join(args[:3])} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    times = [float(line) for line in log.read_text().split()]
    rss_kb = int(proc.stderr.rsplit("BENCH_MAXRSS_KB", 1)[1].split()[0])
    timed = times[warmup:]
    return [b - a for a, b in zip(timed, timed[1:])], rss_kb / 2**20


def run_pair(label: str, load: Workload, args: argparse.Namespace, inputs: tuple, tmp: Path) -> list[RunResult]:
    """One run of ours then one of sd-scripts on `load`."""
    _model, _data, tokenizers, stand_in = inputs
    results = []
    for trainer in ("ours", "sd-scripts"):
        out = Path(tempfile.mkdtemp(dir=tmp))
        if trainer == "ours":
            python, command, cwd, env = sys.executable, ours_command(load, out), ROOT, dict(os.environ)
        else:
            python, cwd = args.sd_python, args.sd_scripts
            command = theirs_command(load, out, args.sd_scripts, tokenizers)
            env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(stand_in), str(args.sd_scripts)]),
                       HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        if args.profile:  # profiled runs are slower: their times are for the profile, not the comparison
            args.profile.mkdir(parents=True, exist_ok=True)
            env["BENCH_PROFILE"] = str(args.profile / f"{trainer}-{label.replace(' ', '_').replace(',', '')}.txt")
        intervals, rss = timed_run(python, command, cwd=cwd, env=env, log=out / "steps.log", warmup=args.warmup)
        result = RunResult(trainer, label, statistics.median(intervals), intervals, rss)
        print(f"  {trainer:10s} {label:45s} {result.s_per_step:7.3f} s/step  {rss:5.2f} GiB  "
              f"({len(intervals)} intervals)", flush=True)
        results.append(result)
    return results


def report(results: list[RunResult]) -> dict:
    summary = {}
    print(f"\n{'case':45s} {'ours s/step':>22s} {'sd-scripts s/step':>22s} {'ratio':>6s} {'RSS ours/theirs':>16s}")
    for case in dict.fromkeys(r.case for r in results):
        ours = [r for r in results if r.case == case and r.trainer == "ours"]
        theirs = [r for r in results if r.case == case and r.trainer == "sd-scripts"]
        ratio = statistics.median(r.s_per_step for r in ours) / statistics.median(r.s_per_step for r in theirs)
        rss = (max(r.peak_rss_gib for r in ours), max(r.peak_rss_gib for r in theirs))
        print(f"{case:45s} {' / '.join(f'{r.s_per_step:.2f}' for r in ours):>22s} "
              f"{' / '.join(f'{r.s_per_step:.2f}' for r in theirs):>22s} {ratio:6.2f} {rss[0]:7.2f}/{rss[1]:.2f}")
        summary[case] = {"ratio": ratio, "ours": [r.__dict__ for r in ours], "sd_scripts": [r.__dict__ for r in theirs]}
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sd-scripts", type=Path, required=True, help="a checkout of kohya-ss/sd-scripts")
    ap.add_argument("--sd-python", required=True, help="the python of sd-scripts' own virtual environment")
    ap.add_argument("--cases", default="abc", help="which workloads: a (UNet+TE), b (UNet only), c (grad ckpt)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating pairs (ours, theirs) per case")
    ap.add_argument("--warmup", type=int, default=2, help="optimizer steps not timed")
    ap.add_argument("--intervals", type=int, default=10, help="timed intervals per run")
    ap.add_argument("--work", type=Path, default=ROOT / "bench-out" / "vs-sd-scripts")
    ap.add_argument("--profile", type=Path, help="write each trainer's torch.profiler table of steps 3-4 here")
    args = ap.parse_args()
    inputs = prepare(args.work)
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        for _round in range(args.rounds):
            for key in args.cases:
                label, options = CASES[key]
                load = Workload(inputs[0], inputs[1], args.warmup + args.intervals + 1, **options)
                results += run_pair(label, load, args, inputs, Path(tmp))
    summary = report(results)
    (args.work / "results.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(f"\nresults: {args.work / 'results.json'}")


if __name__ == "__main__":
    main()
