"""Which model family a base model is, read from its files without torch.

The web process calls `detect_model` to show the family next to the model path; the engine calls
`resolve_model_info(cfg)`, which also merges the user's v2 / v_parameterization flags.

Sources, in order of trust:
- diffusers folder: model_index.json, text_encoder/unet configs, scheduler prediction_type;
- single .safetensors file: key prefixes of the header (SD2 `cond_stage_model.model.`, SD1
  `cond_stage_model.transformer.`, SDXL `conditioner.embedders.0.transformer.` +
  `conditioner.embedders.1.model.`), for v-prediction an explicit `v_pred` key,
  the component configs this app embeds when it writes a checkpoint, else ComfyUI's norm-bias heuristic;
- .ckpt (pickle): needs torch to read, so detection is left to the loader (`detect_from_state_dict`).
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from trainer.families.model_info import (
    MODEL_FILE_SUFFIXES,
    SD1_TE_PREFIX,
    SD2_TE_PREFIX,
    SDXL_PREFIX,
    SDXL_TE1_PREFIX,
    SDXL_TE2_PREFIX,
    UNET_PREFIX,
    V_PRED_KEY,
    ModelInfo,
    ModelPathError,
    embedded_configs,
)
from trainer.families.traits import family_label, family_traits

# ComfyUI's SD2 v-prediction test: population std of this bias above 0.09 means a 768-v model.
V_PRED_NORM_BIAS_STD = 0.09
_V_PRED_NORM_BIAS = re.compile(r"^model\.diffusion_model\.output_blocks\.(\d+)\.1\.transformer_blocks\.0\.norm1\.bias$")

REFINER_MESSAGE = "SDXL refiner models are not supported (LoRAs are trained on an SDXL base model)."
REFINER_HINT = "Choose an SDXL base model (two text encoders), e.g. sd_xl_base_1.0.safetensors."
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_id(text: str) -> bool:
    """`owner/name` as the Hugging Face Hub spells model ids (not a relative or home path)."""
    return bool(_HUB_ID.match(text)) and not text.startswith((".", "/", "~"))


def detect_model(path: str) -> ModelInfo:
    """Detect the family and prediction type of a diffusers folder, single file, or cached hub id."""
    text = str(path).strip()
    if not text:
        raise ModelPathError("No base model given.", "Choose a diffusers folder or a .safetensors/.ckpt file.")
    p = Path(text).expanduser()
    if p.is_dir():
        return _detect_folder(p, kind="diffusers")
    if p.is_file():
        if p.suffix.lower() == ".safetensors":
            return _detect_safetensors(p)
        if p.suffix.lower() in MODEL_FILE_SUFFIXES:
            return ModelInfo(None, False, None, "single_file", str(p),
                             ["A pickle checkpoint (.ckpt) can only be inspected while loading; "
                              "the family is detected then."])
        raise ModelPathError(f"{p.name} is not a model file.",
                             "Use a diffusers folder or a .safetensors/.ckpt checkpoint.")
    if is_hub_id(text):
        return _detect_hub(text)
    raise ModelPathError(f"Model not found: {text}", "Check the path; it must be a folder or file on this computer.")


def resolve_model_info(cfg: Any, detected: Optional[ModelInfo] = None) -> ModelInfo:
    """detect_model(cfg.pretrained_model_name_or_path) merged with the user's v2/v_parameterization flags.

    For the engine: a pickle checkpoint (.ckpt) is opened with torch here (memory-mapped, so only its
    key names and one small tensor are read) and detected like a safetensors file.

    The files decide the family: SD1 and SD2 weights are not interchangeable, so a contradicting `v2`
    flag only produces a note. The prediction type comes from the files when they state it, but a
    user's `v_parameterization=True` wins, since the SD2 heuristic can be wrong and SD1 v-prediction
    fine-tunes exist. Both flags default to False, so False cannot override a detected True.
    `detected`: what pre-flight already detected (the files are not read again).
    """
    info = detected if detected is not None else detect_model(cfg.pretrained_model_name_or_path)
    if info.family is None and info.kind == "single_file":
        info = _detect_pickle(info.path)
    return merge_user_flags(info, cfg)


def merge_user_flags(info: ModelInfo, cfg: Any) -> ModelInfo:
    """`info` with the family and prediction type settled as `resolve_model_info` describes."""
    notes: list[str] = []
    family = info.family
    if family is None:  # pickle checkpoint: trust the flags until the loader reads the keys
        family = "sd2" if cfg.v2 else "sd1"
        notes.append(f"Assuming {family_label(family)} from the v2 setting; checked when the checkpoint is loaded.")
    elif cfg.v2 and family == "sd1":
        notes.append("'SD 2.x (v2)' is set, but the weights are SD 1.x; loading as SD 1.x.")
    elif not cfg.v2 and family == "sd2":
        notes.append("The weights are SD 2.x; v2 turned on automatically.")
    elif cfg.v2 and family == "sdxl":
        notes.append("'SD 2.x (v2)' is set, but the weights are SDXL; loading as SDXL.")

    v_param = info.v_parameterization
    if cfg.v_parameterization:
        if v_param is False:
            notes.append("v-parameterization is set although the model looks like an epsilon model; "
                         "using v-prediction as set.")
        v_param = True
    elif v_param:
        notes.append("The model predicts v (v-parameterization); turned on automatically.")
    return replace(info, family=family, v2=family_traits(family).v2, v_parameterization=bool(v_param),
                   notes=[*info.notes, *notes])


def detect_from_keys(keys: Iterable[str], get_tensor: Callable[[str], Any], configs: Optional[dict] = None,
                     *, path: str = "", kind: str = "single_file") -> ModelInfo:
    """Detect from the key names of an original (LDM/SGM) checkpoint.

    `get_tensor(key)` returns something numpy can read (only used for the v-prediction heuristic), so
    this serves both the torch-free header reader and the engine with a loaded .ckpt state dict.
    `configs` are the component configs embedded by `save_single_file`, if any.
    """
    keys = set(keys)
    notes: list[str] = []
    if not any(k.startswith(UNET_PREFIX) for k in keys):
        hint = ("This looks like a LoRA file, not a base model." if any(k.startswith("lora_") for k in keys)
                else "Choose a full Stable Diffusion checkpoint (UNet, VAE and text encoder in one file).")
        raise ModelPathError(f"{Path(path).name or 'The checkpoint'} has no Stable Diffusion UNet weights.", hint)
    if any(k.startswith(SDXL_PREFIX) for k in keys):
        family = "sdxl"
        has_te1 = any(k.startswith(SDXL_TE1_PREFIX) for k in keys)
        has_te2 = any(k.startswith(SDXL_TE2_PREFIX) for k in keys)
        if not has_te1 and any(k.startswith("conditioner.embedders.0.model.") for k in keys):
            raise ModelPathError(REFINER_MESSAGE, REFINER_HINT)
        if not (has_te1 and has_te2):
            raise ModelPathError(f"{Path(path).name or 'The checkpoint'} lacks one of the two SDXL text encoders.",
                                 "Choose a complete SDXL base checkpoint.")
    elif any(k.startswith(SD2_TE_PREFIX) for k in keys):
        family = "sd2"
    elif any(k.startswith(SD1_TE_PREFIX) for k in keys):
        family = "sd1"
    else:
        raise ModelPathError(f"{Path(path).name or 'The checkpoint'} has no text encoder weights.",
                             "Choose a full Stable Diffusion 1.x, 2.x or SDXL checkpoint.")

    if V_PRED_KEY in keys:
        v_param: Optional[bool] = True
        notes.append("v-prediction model (the checkpoint has a v_pred marker).")
    elif configs and "scheduler" in configs:
        v_param = configs["scheduler"].get("prediction_type") == "v_prediction"
    elif family == "sd2":
        v_param = _v_pred_heuristic(keys, get_tensor)
        if v_param:
            notes.append("Detected a v-prediction (768-v) SD 2.x model from its weights.")
    else:
        v_param = False
    return ModelInfo(family, family_traits(family).v2, v_param, kind, path, notes)


def _v_pred_heuristic(keys: set[str], get_tensor: Callable[[str], Any]) -> bool:
    import numpy as np

    candidates = [(int(m.group(1)), k) for k in keys if (m := _V_PRED_NORM_BIAS.match(k))]
    if not candidates:
        return False
    _, key = max(candidates)  # the last output block with attention (output_blocks.11.1 on real SD2)
    bias = np.asarray(get_tensor(key), dtype=np.float64)
    return float(bias.std()) > V_PRED_NORM_BIAS_STD


def _detect_safetensors(path: Path) -> ModelInfo:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            keys = list(f.keys())
            metadata = f.metadata() or {}
            return detect_from_keys(keys, lambda k: _read_numpy(f, path, k), embedded_configs(metadata),
                                    path=str(path))
    except ModelPathError:
        raise
    except Exception as exc:  # safetensors raises its own error types for truncated/foreign files
        raise ModelPathError(f"Cannot read {path.name}: {exc}", "The file may be incomplete or not a safetensors file.") from exc


def _read_numpy(f: Any, path: Path, key: str):
    """A tensor as numpy; bfloat16 (which numpy lacks) is decoded from the raw bytes."""
    import numpy as np

    try:
        return f.get_tensor(key)
    except Exception:
        # safetensors' numpy backend rejects bf16; the format is simple enough to read one tensor by hand.
        with open(path, "rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            entry = json.loads(fh.read(header_len))[key]
            start, end = entry["data_offsets"]
            fh.seek(8 + header_len + start)
            raw = fh.read(end - start)
        if entry["dtype"] != "BF16":
            raise
        return (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def _detect_pickle(path: str) -> ModelInfo:
    from trainer.families.single_file import read_checkpoint  # imports torch

    state_dict, configs = read_checkpoint(path)
    return detect_from_keys(state_dict.keys(), lambda k: state_dict[k].float().numpy(), configs, path=path)


def _detect_folder(folder: Path, *, kind: str) -> ModelInfo:
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        hint = "Choose the folder that contains model_index.json, or a .safetensors/.ckpt file."
        if (folder / "config.json").is_file() or (folder / "diffusion_pytorch_model.safetensors").is_file():
            hint = "This looks like a single component (e.g. a VAE), not a full model. " + hint
        raise ModelPathError(f"{folder} is not a diffusers model folder (no model_index.json).", hint)
    index = _read_json(index_path)
    class_name = str(index.get("_class_name", ""))
    notes: list[str] = []
    if "XL" in class_name or "text_encoder_2" in index:
        if not _component_present(index, "text_encoder"):
            raise ModelPathError(REFINER_MESSAGE, REFINER_HINT)
        return ModelInfo("sdxl", family_traits("sdxl").v2, _folder_v_param(folder, notes), kind, str(folder), notes)
    if class_name and not class_name.startswith("StableDiffusion"):
        raise ModelPathError(f"{folder.name} is a {class_name}, not a Stable Diffusion 1.x/2.x/XL model.")

    te = _read_json(folder / "text_encoder" / "config.json", required=False)
    unet = _read_json(folder / "unet" / "config.json", required=False)
    if te.get("hidden_act") in ("gelu", "quick_gelu"):
        # OpenCLIP ViT-H (SD2) uses exact GELU, OpenAI CLIP ViT-L (SD1) quick GELU.
        family = "sd2" if te["hidden_act"] == "gelu" else "sd1"
    elif unet.get("cross_attention_dim") in (768, 1024):
        family = "sd2" if unet["cross_attention_dim"] == 1024 else "sd1"
    elif "use_linear_projection" in unet:
        family = "sd2" if unet["use_linear_projection"] else "sd1"
    else:
        raise ModelPathError(f"Cannot tell whether {folder.name} is SD 1.x or SD 2.x.",
                             "Its text_encoder/config.json and unet/config.json are missing or unusual.")

    return ModelInfo(family, family_traits(family).v2, _folder_v_param(folder, notes), kind, str(folder), notes)


def _folder_v_param(folder: Path, notes: list[str]) -> Optional[bool]:
    scheduler = _read_json(folder / "scheduler" / "scheduler_config.json", required=False)
    v_param: Optional[bool] = scheduler.get("prediction_type") == "v_prediction" if scheduler else None
    if v_param is None:
        notes.append("No scheduler config: the prediction type (epsilon / v) is taken from the settings.")
    return v_param


def _component_present(index: dict, name: str) -> bool:
    """model_index.json lists a component as [library, class]; absent or [null, null] means none."""
    entry = index.get(name)
    return isinstance(entry, list) and len(entry) == 2 and entry[1] is not None


def _detect_hub(repo_id: str) -> ModelInfo:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub ships with diffusers
        try_to_load_from_cache = None
    cached = try_to_load_from_cache(repo_id, "model_index.json") if try_to_load_from_cache else None
    if not isinstance(cached, str):
        raise ModelPathError(
            f"Model not found: {repo_id} is neither a file or folder here nor in the local Hugging Face cache.",
            "Press \"Download from the Hub\" under the model field to download it into that cache, or choose "
            "a diffusers folder or .safetensors file on this computer. Training itself never downloads.")
    info = _detect_folder(Path(cached).parent, kind="hub")
    return info.with_notes(f"Using the cached copy of {repo_id} in {info.path}.")


def _read_json(path: Path, *, required: bool = True) -> dict:
    if not path.is_file():
        if required:
            raise ModelPathError(f"Missing {path}.")
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelPathError(f"Cannot read {path}: {exc}") from exc
    return data if isinstance(data, dict) else {}
