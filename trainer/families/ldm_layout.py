"""Original-layout (LDM / SGM) names of diffusers and transformers weights, for writing single-file checkpoints.

diffusers can read this layout but has no writer for it, so these functions map diffusers keys back
to the original names. SDXL files use Stability AI's SGM layout: the UNet and VAE keys are the LDM
ones, the text encoders sit under `conditioner.embedders.0.transformer.` (CLIP-L, the transformers
layout) and `conditioner.embedders.1.model.` (OpenCLIP bigG: fused q/k/v, text_projection).
`ldm_module_path` also gives SDXL LoRA modules their kohya (SGM) names.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from trainer.families.model_info import SD1_TE_PREFIX, SD2_TE_PREFIX, SDXL_TE1_PREFIX, SDXL_TE2_PREFIX, UNET_PREFIX

VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = SD1_TE_PREFIX + "text_model."

_RESNET_RENAMES = {  # diffusers ResnetBlock2D -> LDM ResBlock
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTENTION_RENAMES = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_OPEN_CLIP_RENAMES = {  # within a transformer layer: diffusers/transformers CLIP -> OpenCLIP
    "self_attn.out_proj": "attn.out_proj",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}


def to_ldm_state_dict(unet: Any, vae: Any, text_encoder: Any, family: str) -> dict[str, torch.Tensor]:
    """The full original-layout state dict (UNet, VAE, text encoder) of diffusers/transformers models."""
    out = _unet_and_vae(unet, vae)
    te_state = text_encoder.state_dict()
    if family.startswith("sd2"):
        out.update({SD2_TE_PREFIX + k: v for k, v in open_clip_to_ldm(te_state).items()})
    else:
        out.update({CLIP_PREFIX + k: v for k, v in clip_to_ldm(te_state).items()})
    return {k: v.detach().to("cpu").contiguous() for k, v in out.items()}  # safetensors needs contiguous


def to_sgm_state_dict(unet: Any, vae: Any, text_encoder: Any, text_encoder_2: Any) -> dict[str, torch.Tensor]:
    """The full SGM-layout state dict of an SDXL model (UNet, VAE, CLIP-L, OpenCLIP bigG)."""
    out = _unet_and_vae(unet, vae)
    for key, value in clip_to_ldm(text_encoder.state_dict()).items():
        out[SDXL_TE1_PREFIX + "text_model." + key] = value
    for key, value in open_clip_to_ldm(text_encoder_2.state_dict()).items():
        out[SDXL_TE2_PREFIX + key] = value
    # OpenCLIP's temperature; transformers has no place for it. SGM checkpoints carry CLIP's ln(100).
    out[SDXL_TE2_PREFIX + "logit_scale"] = torch.tensor(math.log(100.0))
    return {k: v.detach().to("cpu").contiguous() for k, v in out.items()}


def _unet_and_vae(unet: Any, vae: Any) -> dict[str, torch.Tensor]:
    """The UNet and VAE weights under their LDM names (the same in the LDM and SGM layouts)."""
    out = {UNET_PREFIX + key: value for key, value in unet_to_ldm(unet.state_dict(), unet.config).items()}
    out.update({VAE_PREFIX + key: value for key, value in vae_to_ldm(vae.state_dict(), vae.config).items()})
    return out


def unet_to_ldm(state_dict: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """UNet2DConditionModel keys -> LDM `input_blocks/middle_block/output_blocks` keys (no prefix)."""
    prefixes = _unet_prefix_map(config)
    out = {}
    for key, value in state_dict.items():
        for diffusers_prefix, ldm_prefix, is_resnet in prefixes:
            if key.startswith(diffusers_prefix):
                rest = key[len(diffusers_prefix):]
                if is_resnet:
                    rest = _rename_first(rest, _RESNET_RENAMES)
                out[ldm_prefix + rest] = value
                break
        else:
            raise ValueError(f"No original-layout name for UNet weight {key}")
    return out


def ldm_module_path(module_path: str, config: Any) -> str:
    """The original-layout (LDM/SGM) path of a UNet2DConditionModel submodule.

    'down_blocks.1.attentions.0.proj_in' -> 'input_blocks.4.1.proj_in' (SDXL numbering),
    'down_blocks.0.resnets.0.conv1' -> 'input_blocks.1.0.in_layers.2', 'down_blocks.0.downsamplers.0.conv'
    -> 'input_blocks.3.0.op', 'up_blocks.0.upsamplers.0.conv' -> 'output_blocks.2.2.conv'.
    """
    key = module_path + "."
    for diffusers_prefix, ldm_prefix, is_resnet in _unet_prefix_map(config):
        if key.startswith(diffusers_prefix):
            rest = key[len(diffusers_prefix):]
            if is_resnet:
                rest = _rename_first(rest, _RESNET_RENAMES)
            return (ldm_prefix + rest).rstrip(".")
    raise ValueError(f"No original-layout name for UNet module {module_path}")


def _unet_prefix_map(config: Any) -> list[tuple[str, str, bool]]:
    """(diffusers prefix, LDM prefix, is a resnet) for every block of an SD1/SD2-style UNet.

    LDM numbers the UNet as a flat list: input block 0 is conv_in, then each down block contributes
    `layers_per_block` (resnet, attention) pairs plus one downsampler; output blocks hold
    `layers_per_block + 1` pairs per up block, with the upsampler after the last pair.
    """
    per_block = config["layers_per_block"]
    n_blocks = len(config["down_block_types"])
    pairs = [
        ("time_embedding.linear_1.", "time_embed.0.", False),
        ("time_embedding.linear_2.", "time_embed.2.", False),
        ("add_embedding.linear_1.", "label_emb.0.0.", False),  # SDXL size/crop + pooled text embedding
        ("add_embedding.linear_2.", "label_emb.0.2.", False),
        ("conv_in.", "input_blocks.0.0.", False),
        ("conv_norm_out.", "out.0.", False),
        ("conv_out.", "out.2.", False),
        ("mid_block.resnets.0.", "middle_block.0.", True),
        ("mid_block.attentions.0.", "middle_block.1.", False),
        ("mid_block.resnets.1.", "middle_block.2.", True),
    ]
    for i in range(n_blocks):
        for j in range(per_block):
            index = 1 + i * (per_block + 1) + j
            pairs.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{index}.0.", True))
            pairs.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{index}.1.", False))
        downsample_index = 1 + i * (per_block + 1) + per_block
        pairs.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{downsample_index}.0.op.", False))
    for i, block_type in enumerate(config["up_block_types"]):
        for j in range(per_block + 1):
            index = i * (per_block + 1) + j
            pairs.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{index}.0.", True))
            pairs.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{index}.1.", False))
        last = i * (per_block + 1) + per_block
        slot = 2 if "CrossAttn" in block_type else 1  # the upsampler follows the attention, if any
        pairs.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{last}.{slot}.", False))
    return pairs


def vae_to_ldm(state_dict: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """AutoencoderKL keys -> LDM VAE keys (no prefix); attention projections become 1x1 convs."""
    n_up = len(config["up_block_types"])
    pairs = [("encoder.conv_norm_out.", "encoder.norm_out."), ("decoder.conv_norm_out.", "decoder.norm_out.")]
    for i in range(len(config["down_block_types"])):
        pairs.append((f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block."))
        pairs.append((f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample."))
    for i in range(n_up):  # LDM numbers the decoder's levels from the lowest resolution up
        pairs.append((f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{n_up - 1 - i}.block."))
        pairs.append((f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{n_up - 1 - i}.upsample."))
    for part in ("encoder", "decoder"):
        pairs.append((f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1."))
        pairs.append((f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2."))
        pairs.append((f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1."))

    out = {}
    for key, value in state_dict.items():
        new_key = key
        for diffusers_prefix, ldm_prefix in pairs:
            if key.startswith(diffusers_prefix):
                new_key = ldm_prefix + key[len(diffusers_prefix):]
                break
        if ".mid.attn_1." in new_key:
            head, rest = new_key.split(".mid.attn_1.")
            new_key = f"{head}.mid.attn_1.{_rename_first(rest, _VAE_ATTENTION_RENAMES)}"
            if value.ndim == 2:
                value = value[:, :, None, None]
        out[new_key.replace(".conv_shortcut.", ".nin_shortcut.")] = value
    return out


def clip_to_ldm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers CLIPTextModel keys -> the part after `cond_stage_model.transformer.text_model.`."""
    return {k.removeprefix("text_model."): v for k, v in state_dict.items() if not k.endswith("position_ids")}


def open_clip_to_ldm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers CLIPTextModel(WithProjection) keys -> OpenCLIP keys (after `cond_stage_model.model.`
    for SD2, `conditioner.embedders.1.model.` for SDXL).

    q/k/v are fused into `in_proj_weight/bias`. diffusers' SD2 text encoder stops at the penultimate
    OpenCLIP layer, so only the layers present are written. OpenCLIP multiplies by `text_projection`
    from the right, so it is the transpose of the Linear weight of a CLIPTextModelWithProjection (SDXL);
    without one (SD2, which does not use it, but OpenCLIP loaders expect it) the identity is written.
    """
    state_dict = {k.removeprefix("text_model."): v for k, v in state_dict.items() if not k.endswith("position_ids")}
    projection = state_dict.pop("text_projection.weight", None)
    out: dict[str, torch.Tensor] = {
        "token_embedding.weight": state_dict.pop("embeddings.token_embedding.weight"),
        "positional_embedding": state_dict.pop("embeddings.position_embedding.weight"),
        "ln_final.weight": state_dict.pop("final_layer_norm.weight"),
        "ln_final.bias": state_dict.pop("final_layer_norm.bias"),
    }
    hidden = out["token_embedding.weight"].shape[1]
    layers = sorted({int(k.split(".")[2]) for k in state_dict if k.startswith("encoder.layers.")})
    for n in layers:
        src, dst = f"encoder.layers.{n}.", f"transformer.resblocks.{n}."
        for kind in ("weight", "bias"):
            qkv = [state_dict.pop(f"{src}self_attn.{p}_proj.{kind}") for p in "qkv"]
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(qkv, dim=0)
        for key in [k for k in state_dict if k.startswith(src)]:
            out[dst + _rename_first(key[len(src):], _OPEN_CLIP_RENAMES)] = state_dict.pop(key)
    if state_dict:
        raise ValueError(f"No OpenCLIP name for text encoder weights {sorted(state_dict)[:5]}")
    if projection is not None:
        out["text_projection"] = projection.T.contiguous()
    else:
        out["text_projection"] = torch.eye(hidden, dtype=out["ln_final.weight"].dtype)
    return out


def _rename_first(rest: str, renames: dict[str, str]) -> str:
    for old, new in renames.items():
        if rest.startswith(old + "."):
            return new + rest[len(old):]
    return rest
