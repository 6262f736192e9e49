"""Random LoRA files with chosen layouts, for tests and benchmarks (no real weights exist offline).

`sd15_module_shapes()` lists every module a kohya LoRA-C3Lier ("LoCon") network creates on SD1.5,
derived from the architecture itself: a diffusers UNet / transformers CLIP text encoder with the
SD1.5 configuration is instantiated on the meta device (no memory, no weights) and walked with
sd-scripts' target rules (kohya-reference §4.1).
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch

from trainer.tools.factors import ModuleShape

SD15_UNET_CONFIG = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768,
    attention_head_dim=8,
)
SD15_TEXT_CONFIG = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)

_UNET_TARGETS = ("Transformer2DModel",)
_UNET_CONV_TARGETS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
_TE_TARGETS = ("CLIPAttention", "CLIPSdpaAttention", "CLIPMLP")


def _layer_shape(layer: torch.nn.Module) -> Optional[ModuleShape]:
    if isinstance(layer, torch.nn.Linear):
        return ModuleShape(layer.out_features, layer.in_features)
    if isinstance(layer, torch.nn.Conv2d):
        return ModuleShape(layer.out_channels, layer.in_channels, tuple(layer.kernel_size))
    return None


def _walk(root: torch.nn.Module, prefix: str, classes: tuple[str, ...], path_prefix: str = "") -> dict[str, ModuleShape]:
    found: dict[str, ModuleShape] = {}
    for path, module in root.named_modules():
        if type(module).__name__ not in classes:
            continue
        for child_path, child in module.named_modules():
            shape = _layer_shape(child)
            if shape is None or not child_path:
                continue
            full = f"{path_prefix}{path}.{child_path}"
            found[f"{prefix}_{full.replace('.', '_')}"] = shape
    return found


def sd15_module_shapes(conv: bool = True) -> dict[str, ModuleShape]:
    """kohya module name -> layer shape for an SD1.5 LoRA (with `conv`: LoCon, i.e. conv_dim set)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
        te = CLIPTextModel(CLIPTextConfig(**SD15_TEXT_CONFIG))
    shapes: dict[str, ModuleShape] = {}
    # transformers 5 has no `text_model.` level; kohya names keep it.
    te_root = getattr(te, "text_model", te)
    shapes.update(_walk(te_root, "lora_te", _TE_TARGETS, path_prefix="text_model."))
    classes = _UNET_TARGETS + (_UNET_CONV_TARGETS if conv else ())
    shapes.update(_walk(unet, "lora_unet", classes))
    return shapes


def random_factors(
    shape: ModuleShape, rank: int, generator: torch.Generator, decay: float = 0.8
) -> tuple[torch.Tensor, torch.Tensor]:
    """(lora_down, lora_up) with a geometrically decaying spectrum (like trained LoRAs)."""
    weights = torch.tensor([decay**i for i in range(rank)])
    down = torch.randn(rank, shape.flat_in, generator=generator) / shape.flat_in**0.5
    up = torch.randn(shape.out_features, rank, generator=generator) * weights * 0.05
    if shape.kernel is not None:
        down = down.reshape(rank, shape.in_features, *shape.kernel)
        up = up.reshape(shape.out_features, rank, 1, 1)
    return down, up


def random_lora(
    shapes: Mapping[str, ModuleShape],
    rank: int,
    alpha: float,
    *,
    conv_rank: Optional[int] = None,
    conv_alpha: Optional[float] = None,
    seed: int = 0,
    metadata: Optional[Mapping[str, str]] = None,
):
    """A kohya_format.LoraFile with random factors for every module in `shapes`."""
    from trainer.network.kohya_format import LoraFile, LoraModule

    gen = torch.Generator().manual_seed(seed)
    modules = {}
    for name, shape in shapes.items():
        r, a = (conv_rank or rank, conv_alpha or alpha) if shape.is_spatial else (rank, alpha)
        down, up = random_factors(shape, r, gen)
        modules[name] = LoraModule(name, down, up, float(a))
    meta = {"ss_network_module": "networks.lora", "ss_network_dim": str(rank), "ss_network_alpha": str(float(alpha))}
    meta.update(metadata or {})
    return LoraFile(modules, meta)
