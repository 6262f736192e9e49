"""The slider check users do by hand: an X/Y grid of the LoRA at weights −1 … +1 with fixed seeds.

Columns are the LoRA weights, rows the (prompt, seed) combinations; every image of a row uses the same
seed, so a row differs only by the slider. The LoRA is applied by adding weight·ΔW to the base
layers (`LoraPatch`), which takes any file (any rank per module, resized ones included) exactly as
A1111/ComfyUI apply it.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from trainer.network.kohya_format import LoraFile

DEFAULT_WEIGHTS = (-1.0, -0.5, 0.0, 0.5, 1.0)


class LoraPatch:
    """A LoRA merged into a model's layers at an adjustable weight.

    `set(w)` adds (w − current)·ΔW to every matched layer, so only the small LoRA factors are kept
    (ΔW is rebuilt per switch); `remove()` goes back to weight 0. The rounding of the add/subtract is
    ~1e-7 relative in fp32, far below anything visible."""

    def __init__(self, layers: dict[str, torch.nn.Module], lora: LoraFile):
        self.matched: list[tuple[torch.nn.Module, Any]] = []
        self.unmatched: list[str] = []
        for name, module in lora.modules.items():
            layer = layers.get(name)
            delta_numel = module.up.shape[0] * module.down[0].numel()  # out × (in·kh·kw)
            if layer is None:
                self.unmatched.append(name)
            elif delta_numel != layer.weight.numel():
                raise ValueError(f"{name}: the LoRA module does not fit the layer {tuple(layer.weight.shape)}: "
                                 "the LoRA is for another base model")
            else:
                self.matched.append((layer, module))
        if not self.matched:
            raise ValueError("none of the LoRA's modules matches a layer of the model")
        self.weight = 0.0

    @torch.no_grad()
    def set(self, weight: float) -> None:
        step = float(weight) - self.weight
        if step != 0.0:
            for layer, module in self.matched:
                delta = module.delta_weight(step).reshape(layer.weight.shape)
                layer.weight.add_(delta.to(layer.weight.device, layer.weight.dtype))
        self.weight = float(weight)

    def remove(self) -> None:
        self.set(0.0)


@dataclass(frozen=True)
class GridLayout:
    """Where things are in the grid: a label column on the left, a header row on top, then the cells."""

    columns: int
    rows: int
    cell_width: int
    cell_height: int

    @property
    def left(self) -> int:
        return max(96, min(self.cell_width // 2, 256))

    @property
    def top(self) -> int:
        return max(24, self.cell_height // 10)

    @property
    def size(self) -> tuple[int, int]:
        return (self.left + self.columns * self.cell_width, self.top + self.rows * self.cell_height)

    def cell_origin(self, row: int, column: int) -> tuple[int, int]:
        return (self.left + column * self.cell_width, self.top + row * self.cell_height)


@dataclass(frozen=True)
class PreviewRow:
    prompt: str
    negative: str
    seed: int


def preview_rows(prompts: Sequence[str], seeds: Sequence[int]) -> list[PreviewRow]:
    """One row per prompt and seed; a prompt's own `--d` seed replaces the seed list, `--n` is its negative."""
    from trainer.sampling import parse_prompt_line

    rows = []
    for text in prompts:
        parsed = parse_prompt_line(text)
        for seed in ([parsed.seed] if parsed.seed is not None else seeds):
            rows.append(PreviewRow(parsed.prompt, parsed.negative, int(seed)))
    return rows


def weight_label(weight: float) -> str:
    return f"{weight:+g}" if weight else "0"


def render_preview(
    model: Any,
    lora: LoraFile,
    out_path: Path,
    *,
    prompts: Sequence[str],
    seeds: Sequence[int] = (1, 2),
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    width: int = 512,
    height: int = 512,
    steps: int = 28,
    cfg_scale: float = 7.0,
    sampler: str = "euler",
    clip_skip: int = 1,
    device: Optional[str] = None,
    progress: Optional[Callable[[int, int], None]] = None,
    should_stop: Optional[Callable[[], bool]] = None,
) -> Optional[Path]:
    """Render the grid and save it as PNG at `out_path` (never overwriting). `model` is a base model path
    or a loaded `trainer.tools.models.LoadedModel` (its layers are patched and restored). Returns the
    path, or None when `should_stop()` became true between two images."""
    from PIL import Image

    from trainer.tools.models import LoadedModel, load_base_model, lora_layers

    loaded = model if isinstance(model, LoadedModel) else load_base_model(model)
    family, comp = loaded.family, loaded.comp
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    for part in (comp.unet, comp.vae, *comp.text_encoders):
        part.to(dev).eval()
    rows = preview_rows(prompts, seeds)
    layout = GridLayout(len(weights), len(rows), width, height)
    cells: dict[tuple[int, int], Image.Image] = {}
    patch = LoraPatch(lora_layers(loaded, conv=True), lora)
    pipe = family.sampling_pipeline(comp, sampler)
    total, done = len(rows) * len(weights), 0
    try:
        with torch.no_grad():
            for c, weight in enumerate(weights):
                patch.set(weight)
                for r, row in enumerate(rows):
                    if should_stop is not None and should_stop():
                        return None
                    kwargs = family.sampling_kwargs(comp, row.prompt, row.negative, clip_skip=clip_skip,
                                                    max_token_length=75)
                    cells[(r, c)] = pipe(**kwargs, width=width, height=height, num_inference_steps=steps,
                                         guidance_scale=cfg_scale, output_type="pil",
                                         generator=torch.Generator("cpu").manual_seed(row.seed)).images[0]
                    done += 1
                    if progress is not None:
                        progress(done, total)
    finally:
        patch.remove()
    grid = compose_grid(layout, cells, [weight_label(w) for w in weights],
                        [f"seed {row.seed}\n{row.prompt}" for row in rows])
    info = {"lora_weights": list(weights), "rows": [row.__dict__ for row in rows], "steps": steps,
            "cfg_scale": cfg_scale, "sampler": sampler, "size": [width, height]}
    return save_png(grid, Path(out_path), {"slider_preview": json.dumps(info, ensure_ascii=False)})


def compose_grid(layout: GridLayout, cells: dict[tuple[int, int], Any], column_labels: Sequence[str],
                 row_labels: Sequence[str]) -> Any:
    """Paste the cell images into a white canvas with the weight above each column and the row's label
    (seed, prompt) at its left."""
    from PIL import Image, ImageDraw

    grid = Image.new("RGB", layout.size, "white")
    draw = ImageDraw.Draw(grid)
    font = _font(max(10, min(layout.top - 8, 28)))
    small = _font(max(9, min(layout.top // 2, 18)))
    for c, label in enumerate(column_labels):
        x, _ = layout.cell_origin(0, c)
        draw.text((x + layout.cell_width / 2, layout.top / 2), label, fill="black", font=font, anchor="mm")
    line_height = getattr(small, "size", 10)  # the old bitmap font has no size: about 10 px
    chars = max(8, int(layout.left / (0.55 * line_height)))  # characters per line of the label column
    max_lines = max(1, layout.cell_height // (line_height + 4))
    for r, label in enumerate(row_labels):
        _, y = layout.cell_origin(r, 0)
        lines = [part for line in label.splitlines() for part in (textwrap.wrap(line, chars) or [""])]
        draw.multiline_text((4, y + 4), "\n".join(lines[:max_lines]), fill="black", font=small, spacing=2)
    for (r, c), image in cells.items():
        grid.paste(image.convert("RGB").resize((layout.cell_width, layout.cell_height)), layout.cell_origin(r, c))
    return grid


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one fixed-size bitmap font
        return ImageFont.load_default()


def save_png(image: Any, path: Path, text: dict[str, str]) -> Path:
    from PIL.PngImagePlugin import PngInfo

    from trainer.fileio import atomic_write_with

    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    atomic_write_with(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=info), exclusive=True)
    return path
