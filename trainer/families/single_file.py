"""Single-file (original LDM / SGM layout) Stable Diffusion checkpoints: writing and offline loading.

Loading goes through diffusers' own single-file converters (`from_single_file`) with `config=` pointing
at a local folder of component configs, so nothing is fetched from the hub: the bundled SD1.5/SD2.1/SDXL
configs in `configs/`, or the configs this module embeds in files it writes (the tiny test models have
non-standard sizes that cannot be inferred from weight shapes alone, e.g. the number of heads).

diffusers can read this layout but has no writer for it: `save_single_file` writes the names that
`ldm_layout` maps diffusers keys to.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import torch

from trainer.families.ldm_layout import to_ldm_state_dict, to_sgm_state_dict
from trainer.families.model_info import EMBEDDED_CONFIG_KEY, V_PRED_KEY, ModelPathError, embedded_configs
from trainer.families.traits import family_traits
from trainer.fileio import atomic_write_with

# A .ckpt keeps the embedded configs beside "state_dict" (readers unwrap "state_dict" and ignore the rest).
CKPT_CONFIG_KEY = "lora_gui_diffusers_configs"


def bundled_config_dir(family: str) -> Path:
    """The shipped diffusers config folder of a family: configs/sd15 (SD1.x), configs/sd21 (SD2.x), configs/sdxl."""
    return family_traits(family).bundled_config_dir


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
                f"{name} does not match the {family_traits(family).label} architecture: {exc}",
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
