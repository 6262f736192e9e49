"""The CPU demo on the toy world: a few images of the held-out concept (`usu`, a green star) in the kohya
folder layout, and the run file that trains a LoRA for it on the shipped toy model. Torch-free."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

from trainer.fileio import atomic_write_text, atomic_write_with
from trainer.toyworld import SHIPPED_MODEL
from trainer.toyworld.world import (
    BIG_RANGE,
    SMALL_RANGE,
    CONCEPT_COLOUR,
    CONCEPT_SHAPE,
    CONCEPT_WORD,
    COLOURS,
    base_caption,
    concept_caption,
    random_scene,
    render,
)

DEMO_IMAGES = 12
DEMO_REPEATS = 10
DEMO_FOLDER = f"{DEMO_REPEATS}_{CONCEPT_WORD}"
SAMPLE_BACKGROUNDS = ("red", "blue", "yellow", "white")

# The demo's training settings; presets/cpu_demo.json is the same run with paths relative to the app folder.
DEMO_SETTINGS: dict = {
    "format_version": 1,
    "output_name": "demo_lora",
    "training_comment": f"CPU demo: the toy model learns '{CONCEPT_WORD}', a {CONCEPT_COLOUR} {CONCEPT_SHAPE}",
    "save_model_as": "safetensors",
    "save_precision": "fp16",
    "resolution": "64",
    "enable_bucket": False,
    "train_batch_size": 4,
    "max_train_epochs": 8,
    "max_train_steps": 0,
    "save_every_n_epochs": 0,
    "caption_extension": ".txt",
    "seed": 42,
    "mixed_precision": "no",
    "cache_latents": True,
    "optimizer_type": "AdamW",
    "lr_scheduler": "constant",
    "learning_rate": 0.005,
    "text_encoder_lr": 0.002,
    "lr_warmup_steps": 0,
    "lora_type": "LoCon",  # the convolutions draw the outline: a new shape needs them
    "network_dim": 8,
    "network_alpha": 8.0,
    "conv_dim": 8,
    "conv_alpha": 8.0,
    "sample_at_first": True,
    "sample_every_n_epochs": 2,
    "sample_sampler": "ddim",
    "sample_prompts": "\n".join(f"{concept_caption(b)} --w 64 --h 64 --s 25 --l 4 --d {i + 1}"
                                for i, b in enumerate(SAMPLE_BACKGROUNDS))
    + f"\n{base_caption('circle', 'blue', 'yellow')} --w 64 --h 64 --s 25 --l 4 --d 5",
}

# The size slider on the toy world (copy-machine method: one LoRA on small shapes, one on big, merged).
SIZE_SLIDER_PROMPT = base_caption("circle", "red", "blue")
SIZE_SLIDER_SETTINGS: dict = {
    "method": "copy",
    "prompt": SIZE_SLIDER_PROMPT,
    "output_name": "size_slider",
    "network_dim": 8,
    "network_alpha": 8.0,
    "optimizer_type": "AdamW",
    "learning_rate": 0.002,
    "max_train_steps": 120,
    "lr_warmup_steps": 0,
    "lr_scheduler": "constant",
    "resolution": "64",
    "preview_prompts": [SIZE_SLIDER_PROMPT, base_caption("square", "yellow", "purple")],
    "preview_width": 64,
    "preview_height": 64,
    "preview_steps": 25,
    "preview_cfg_scale": 4.0,
    "preview_sampler": "ddim",
}


def write_concept_images(folder: Path, count: int = DEMO_IMAGES, seed: int = 9) -> list[Path]:
    """`count` captioned images of the concept on backgrounds of every other colour."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    backgrounds = [c for c in COLOURS if c != CONCEPT_COLOUR]
    paths = []
    for i in range(count):
        background = backgrounds[i % len(backgrounds)]
        scene = random_scene(rng, shapes=(CONCEPT_SHAPE,), colour=CONCEPT_COLOUR, background=background)
        path = folder / f"{CONCEPT_WORD}_{i:03d}.png"
        image = render(scene)
        atomic_write_with(path, lambda tmp: image.save(tmp, format="PNG"))
        atomic_write_text(path.with_suffix(".txt"), concept_caption(background) + "\n")
        paths.append(path)
    return paths


def write_size_pair(root: Path, count: int = 8, seed: int = 5) -> tuple[Path, Path]:
    """The size slider's image folders: root/small and root/big hold the same scenes, small and big."""
    rng = random.Random(seed)
    small, big = Path(root) / "small", Path(root) / "big"
    for i in range(count):
        scene = random_scene(rng, radius_range=BIG_RANGE)
        little = random_scene(rng, shapes=(scene.shape,), colour=scene.colour, background=scene.background,
                              radius_range=SMALL_RANGE)
        for folder, version in ((big, scene), (small, replace(scene, radius=little.radius))):
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{i:03d}.png"
            image = render(version)
            atomic_write_with(path, lambda tmp: image.save(tmp, format="PNG"))
            atomic_write_text(path.with_suffix(".txt"), version.caption() + "\n")
    return small, big


def demo_config(root: Path, model: Path = SHIPPED_MODEL) -> dict:
    """The demo's run file for a demo folder `root` (absolute paths)."""
    root = Path(root).resolve()
    return {**DEMO_SETTINGS, "pretrained_model_name_or_path": str(Path(model).resolve()),
            "train_data_dir": str(root / "img"), "output_dir": str(root / "output")}


def write_demo(root: Path, model: Path = SHIPPED_MODEL) -> Path:
    """Write root/img/10_usu (the images), root/slider/{small,big} (the size slider's pair) and root/run.json;
    returns the run file. Existing image folders are kept."""
    root = Path(root)
    folder = root / "img" / DEMO_FOLDER
    if not folder.is_dir():
        write_concept_images(folder)
    if not (root / "slider").is_dir():
        write_size_pair(root / "slider")
    run_file = root / "run.json"
    atomic_write_text(run_file, json.dumps(demo_config(root, model), indent=1) + "\n")
    return run_file
