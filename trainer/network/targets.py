"""Which layers get a LoRA: exactly the ones sd-scripts' `networks.lora` adapts.

sd-scripts selects container blocks by class and adapts every Linear / Conv2d inside them:
- UNet: `Transformer2DModel` (proj_in, proj_out, attn1/attn2 to_q/to_k/to_v/to_out.0, ff.net.0.proj,
  ff.net.2); with conv LoRA ("LoCon") also `ResnetBlock2D`, `Downsample2D`, `Upsample2D`.
- text encoders: `CLIPAttention` (q/k/v/out_proj) and `CLIPMLP` (fc1, fc2).
Convolutions with a kernel larger than 1x1 take the conv rank/alpha; Linear and 1x1 convs (proj_in on
SD1, conv_shortcut) take the normal rank/alpha. Selecting by class, not by name, makes the same rule
serve every family built from these diffusers/transformers blocks (SD1, SD2, SDXL).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class LoraTarget:
    path: str  # module path inside the root model, e.g. "down_blocks.0.attentions.0.proj_in"
    module: nn.Module  # the nn.Linear or nn.Conv2d
    conv_rank: bool  # True for a conv with a kernel larger than 1x1 (rank conv_dim, alpha conv_alpha)


def container_classes(kind: str, *, conv: bool) -> tuple[type[nn.Module], ...]:
    """The block classes whose layers are adapted, for a root of kind "unet" or "text_encoder"."""
    if kind == "unet":
        from diffusers.models.downsampling import Downsample2D
        from diffusers.models.resnet import ResnetBlock2D
        from diffusers.models.transformers.transformer_2d import Transformer2DModel
        from diffusers.models.upsampling import Upsample2D

        return (Transformer2DModel, ResnetBlock2D, Downsample2D, Upsample2D) if conv else (Transformer2DModel,)
    if kind == "text_encoder":
        from transformers.models.clip.modeling_clip import CLIPMLP, CLIPAttention

        return (CLIPAttention, CLIPMLP)
    raise ValueError(f"unknown LoRA root kind {kind!r} (expected 'unet' or 'text_encoder')")


def find_lora_targets(root: nn.Module, kind: str, *, conv: bool = False) -> list[LoraTarget]:
    """Every Linear/Conv2d inside the target blocks of `root`, in module order."""
    containers = container_classes(kind, conv=conv)
    targets: dict[str, LoraTarget] = {}
    for block_path, block in root.named_modules():
        if not isinstance(block, containers):
            continue
        for child_path, child in block.named_modules():
            if not isinstance(child, (nn.Linear, nn.Conv2d)):
                continue
            path = f"{block_path}.{child_path}" if block_path else child_path
            is_big_conv = isinstance(child, nn.Conv2d) and tuple(child.kernel_size) != (1, 1)
            targets.setdefault(path, LoraTarget(path, child, is_big_conv))
    return list(targets.values())
