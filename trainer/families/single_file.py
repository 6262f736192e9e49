"""Single-file (original LDM / SGM layout) Stable Diffusion checkpoints: writing and offline loading.

Loading goes through diffusers' own single-file converters (`from_single_file`) with `config=` pointing
at a local folder of component configs, so nothing is fetched from the hub: the bundled SD1.5/SD2.1/SDXL
configs in `configs/`, or the configs this module embeds in files it writes (the tiny test models have
non-standard sizes that cannot be inferred from weight shapes alone, e.g. the number of heads).

diffusers can read this layout but has no writer for it, so `save_single_file` maps diffusers keys
back to the original names itself. SDXL files use Stability AI's SGM layout: the UNet and VAE keys
are the LDM ones, the text encoders sit under `conditioner.embedders.0.transformer.` (CLIP-L, the
transformers layout) and `conditioner.embedders.1.model.` (OpenCLIP bigG: fused q/k/v, text_projection).
"""

from __future__ import annotations

import json
import math
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import torch

from trainer.families.detect import (
    EMBEDDED_CONFIG_KEY,
    SD1_TE_PREFIX,
    SD2_TE_PREFIX,
    SDXL_TE1_PREFIX,
    SDXL_TE2_PREFIX,
    UNET_PREFIX,
    V_PRED_KEY,
    ModelPathError,
    embedded_configs,
)
from trainer.fileio import atomic_write_with

CONFIGS_DIR = Path(__file__).parent / "configs"
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = SD1_TE_PREFIX + "text_model."
# A .ckpt keeps the embedded configs beside "state_dict" (readers unwrap "state_dict" and ignore the rest).
CKPT_CONFIG_KEY = "lora_gui_diffusers_configs"

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


def bundled_config_dir(family: str) -> Path:
    """The shipped diffusers config folder of a family: configs/sd15 (SD1.x), configs/sd21 (SD2.x), configs/sdxl."""
    if family == "sdxl":
        return CONFIGS_DIR / "sdxl"
    return CONFIGS_DIR / ("sd21" if family.startswith("sd2") else "sd15")


# ---- writing ----------------------------------------------------------------------------------
def save_single_file(pipe: Any, path: str | Path, family: str) -> Path:
    """Write `pipe`'s UNet, VAE and text encoder as one original-layout checkpoint.

    `family` is "sd1", "sd2", "sd2-v" or "sdxl" (a ModelInfo-style "sd2" plus the scheduler's prediction
    type also works); an SDXL pipeline's second text encoder is written too. `.safetensors` stores the
    component configs in the metadata; `.ckpt` (torch.save) stores them beside "state_dict".
    v-prediction models get ComfyUI's `v_pred` marker key.
    """
    path = Path(path)
    scheduler = getattr(pipe, "scheduler", None)
    scheduler_config = dict(scheduler.config) if scheduler is not None else _bundled_scheduler_config(family)
    if family == "sd2-v":
        scheduler_config["prediction_type"] = "v_prediction"
    v_pred = scheduler_config.get("prediction_type") == "v_prediction"

    if family == "sdxl":
        tensors = to_sgm_state_dict(pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2)
    else:
        tensors = to_ldm_state_dict(pipe.unet, pipe.vae, pipe.text_encoder, family)
    if v_pred:
        tensors[V_PRED_KEY] = torch.tensor([])
    configs = {
        "unet": dict(pipe.unet.config),
        "vae": dict(pipe.vae.config),
        "text_encoder": pipe.text_encoder.config.to_dict(),
        "scheduler": scheduler_config,
    }
    if family == "sdxl":
        configs["text_encoder_2"] = pipe.text_encoder_2.config.to_dict()
    configs_json = json.dumps(configs, default=_json_default)

    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import save_file

        metadata = {EMBEDDED_CONFIG_KEY: configs_json, "modelspec.prediction_type": "v" if v_pred else "epsilon"}
        atomic_write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    else:
        atomic_write_with(path, lambda tmp: torch.save({"state_dict": tensors, CKPT_CONFIG_KEY: configs_json}, tmp))
    return path


def to_ldm_state_dict(unet: Any, vae: Any, text_encoder: Any, family: str) -> dict[str, torch.Tensor]:
    """The full original-layout state dict (UNet, VAE, text encoder) of diffusers/transformers models."""
    out: dict[str, torch.Tensor] = {}
    for key, value in unet_to_ldm(unet.state_dict(), unet.config).items():
        out[UNET_PREFIX + key] = value
    for key, value in vae_to_ldm(vae.state_dict(), vae.config).items():
        out[VAE_PREFIX + key] = value
    te_state = text_encoder.state_dict()
    if family.startswith("sd2"):
        out.update({SD2_TE_PREFIX + k: v for k, v in open_clip_to_ldm(te_state).items()})
    else:
        out.update({CLIP_PREFIX + k: v for k, v in clip_to_ldm(te_state).items()})
    return {k: v.detach().to("cpu").contiguous() for k, v in out.items()}  # safetensors needs contiguous


def to_sgm_state_dict(unet: Any, vae: Any, text_encoder: Any, text_encoder_2: Any) -> dict[str, torch.Tensor]:
    """The full SGM-layout state dict of an SDXL model (UNet, VAE, CLIP-L, OpenCLIP bigG)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in unet_to_ldm(unet.state_dict(), unet.config).items():
        out[UNET_PREFIX + key] = value
    for key, value in vae_to_ldm(vae.state_dict(), vae.config).items():
        out[VAE_PREFIX + key] = value
    for key, value in clip_to_ldm(text_encoder.state_dict()).items():
        out[SDXL_TE1_PREFIX + "text_model." + key] = value
    for key, value in open_clip_to_ldm(text_encoder_2.state_dict()).items():
        out[SDXL_TE2_PREFIX + key] = value
    # OpenCLIP's temperature; transformers has no place for it. SGM checkpoints carry CLIP's ln(100).
    out[SDXL_TE2_PREFIX + "logit_scale"] = torch.tensor(math.log(100.0))
    return {k: v.detach().to("cpu").contiguous() for k, v in out.items()}


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


def _bundled_scheduler_config(family: str) -> dict:
    return json.loads((bundled_config_dir(family) / "scheduler" / "scheduler_config.json").read_text())


def _json_default(value: Any) -> Any:
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)


# ---- reading ----------------------------------------------------------------------------------
def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], Optional[dict]]:
    """The tensors of a .safetensors/.ckpt checkpoint and the component configs embedded in it, if any."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors import safe_open
            from safetensors.torch import load_file

            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
            return load_file(str(path)), embedded_configs(metadata)
        # weights_only refuses arbitrary pickled objects: a checkpoint must not be able to run code.
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except FileNotFoundError:
        raise ModelPathError(f"Model file not found: {path}") from None
    except Exception as exc:
        hint = ("Old .ckpt files can hold Python objects besides the weights and are refused for safety; "
                "convert the checkpoint to .safetensors." if path.suffix.lower() != ".safetensors"
                else "The file may be incomplete; download it again.")
        raise ModelPathError(f"Cannot read {path.name}: {exc}", hint) from exc
    configs = embedded_configs({EMBEDDED_CONFIG_KEY: data.get(CKPT_CONFIG_KEY)}) if isinstance(data, dict) else None
    while isinstance(data, dict) and "state_dict" in data:
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise ModelPathError(f"{path.name} does not hold a state dict.")
    return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}, configs


@contextmanager
def config_folder(configs: Optional[dict], family: str) -> Iterator[str]:
    """A diffusers config folder for `from_single_file(config=...)`: embedded configs or the bundled ones."""
    if not configs:
        yield str(bundled_config_dir(family))
        return
    with tempfile.TemporaryDirectory(prefix="lora_gui_configs_") as tmp:
        for component, config in configs.items():
            name = "scheduler_config.json" if component == "scheduler" else "config.json"
            target = Path(tmp) / component / name
            target.parent.mkdir(parents=True)
            target.write_text(json.dumps(config), encoding="utf-8")
        yield tmp


def load_single_file_components(state_dict: dict[str, torch.Tensor], configs: Optional[dict], family: str,
                                *, name: str = "checkpoint"):
    """fp32 (unet, vae, text_encoder) from an original-layout state dict, through diffusers' converters.

    No torch_dtype is passed: the weights are copied into the freshly built fp32 models (fp16 files
    are upcast), and diffusers warns on every `.to(dtype)` cast.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
    from transformers import CLIPTextModel

    with config_folder(configs, family) as folder:
        common = dict(config=folder, local_files_only=True)
        try:
            unet = UNet2DConditionModel.from_single_file(state_dict, subfolder="unet", **common)
            vae = AutoencoderKL.from_single_file(state_dict, subfolder="vae", **common)
            # The pipeline-level loader uses this helper for CLIP too; CLIPTextModel has no from_single_file.
            text_encoder = create_diffusers_clip_model_from_ldm(
                CLIPTextModel, state_dict, subfolder="text_encoder", config=folder, local_files_only=True)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise ModelPathError(
                f"{name} does not match the {'SD 2.x' if family.startswith('sd2') else 'SD 1.x'} architecture: {exc}",
                "Check that the file is a complete SD 1.x / 2.x checkpoint (not a LoRA, VAE or SDXL model).") from exc
    for part, model in (("UNet", unet), ("VAE", vae), ("text encoder", text_encoder)):
        _check_loaded(model, f"{name} ({part})")
    return unet, vae, text_encoder


def load_sdxl_single_file_components(state_dict: dict[str, torch.Tensor], configs: Optional[dict], *,
                                     name: str = "checkpoint"):
    """fp32 (unet, vae, text_encoder, text_encoder_2) from an SGM-layout SDXL state dict (see above)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    with config_folder(configs, "sdxl") as folder:
        common = dict(config=folder, local_files_only=True)
        try:
            unet = UNet2DConditionModel.from_single_file(state_dict, subfolder="unet", **common)
            vae = AutoencoderKL.from_single_file(state_dict, subfolder="vae", **common)
            # diffusers picks the converter from the key names and tells the two encoders apart by width.
            text_encoder = create_diffusers_clip_model_from_ldm(
                CLIPTextModel, state_dict, subfolder="text_encoder", **common)
            text_encoder_2 = create_diffusers_clip_model_from_ldm(
                CLIPTextModelWithProjection, state_dict, subfolder="text_encoder_2", **common)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise ModelPathError(
                f"{name} does not match the SDXL architecture: {exc}",
                "Check that the file is a complete SDXL base checkpoint (not a LoRA, VAE or refiner).") from exc
    parts = (("UNet", unet), ("VAE", vae), ("text encoder 1", text_encoder), ("text encoder 2", text_encoder_2))
    for part, model in parts:
        _check_loaded(model, f"{name} ({part})")
    return unet, vae, text_encoder, text_encoder_2


def load_vae(path: str | Path, base_config: Any):
    """A separate VAE: a diffusers folder (or model folder with vae/), or a single file in LDM or diffusers keys.

    Single files without embedded configs are read with the base model's VAE config (all SD1/SD2
    VAEs share one architecture).
    """
    from diffusers import AutoencoderKL

    path = Path(path).expanduser()
    hint = "Use a VAE .safetensors/.ckpt file or a diffusers VAE folder."
    if path.is_dir():
        subfolder = "vae" if (path / "vae" / "config.json").is_file() else None
        if subfolder is None and not (path / "config.json").is_file():
            raise ModelPathError(f"{path} is not a diffusers VAE folder (no config.json).", hint, field="vae")
        try:
            vae = AutoencoderKL.from_pretrained(str(path), subfolder=subfolder, local_files_only=True,
                                                torch_dtype=torch.float32)
        except (OSError, ValueError) as exc:
            raise ModelPathError(f"Cannot load the VAE in {path}: {exc}", hint, field="vae") from exc
        return vae
    if not path.is_file():
        raise ModelPathError(f"VAE not found: {path}", hint, field="vae")
    try:
        state_dict, configs = read_checkpoint(path)
    except ModelPathError as exc:
        raise ModelPathError(exc.message, exc.hint, field="vae") from exc
    vae_config = (configs or {}).get("vae") or dict(base_config)
    with config_folder({"vae": vae_config}, "sd1") as folder:
        try:
            vae = AutoencoderKL.from_single_file(state_dict, config=folder, subfolder="vae", local_files_only=True)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise ModelPathError(f"{path.name} is not a usable SD VAE: {exc}", hint, field="vae") from exc
    _check_loaded(vae, path.name, field="vae")
    return vae


def _check_loaded(model: Any, name: str, *, field: str = "pretrained_model_name_or_path") -> None:
    # from_single_file builds the model on the meta device and fills in what the file has.
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:
        raise ModelPathError(f"{name} is missing {len(missing)} weights (e.g. {missing[0]}).",
                             "The checkpoint is incomplete or of another architecture.", field=field)
