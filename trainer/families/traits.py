"""What each model family is, as plain data (torch-free): the web form, the pre-flight and the loaders read it.

The torch side (`sd.py`, `sdxl.py`) adds loading and encoding; every fact that does not need the weights
lives here once: default sizes, the config fields that apply, the prediction type, the latent scale,
the kohya LoRA name prefixes and the names sd-scripts writes into LoRA metadata.

    traits = family_traits("sd2", v_parameterization=True)   # SD 2.x 768-v
    traits.default_resolution                                  # 768
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

CONFIGS_DIR = Path(__file__).parent / "configs"
V_PREDICTION, EPSILON = "v_prediction", "epsilon"


@dataclass(frozen=True)
class FamilyTraits:
    id: str  # "sd1" | "sd2" | "sdxl": ModelInfo.family
    label: str  # for messages: "SD 1.x"
    default_resolution: int
    bucket_reso_steps: int  # the usual bucket step
    bucket_step_multiple: int  # what the UNet needs bucket steps to be a multiple of
    latent_scale: float  # the VAE's scaling factor
    prediction_type: str  # EPSILON | V_PREDICTION
    v2: bool  # sd-scripts' --v2 flag for this family
    v2_switches: bool  # the v2 / v_parameterization settings apply (SD 1.x / 2.x only)
    lora_prefixes: tuple[str, ...]  # kohya module-name prefixes: the UNet's, then one per text encoder
    pad_tokens: tuple[str, ...]  # the bundled CLIP tokenizer's padding, one per text encoder
    own_fields: tuple[str, ...]  # config fields that exist for this family only
    ignored_fields: tuple[str, ...]  # config fields this family ignores (the pre-flight warns)
    text_encoder_switches: tuple[str, ...]  # config fields that turn each text encoder's LoRA on
    vae_overflows_in_fp16: bool  # the VAE gives NaN in fp16, so it always runs in fp32
    base_model_version: str  # ss_base_model_version, as sd-scripts writes it
    modelspec_architecture: str  # modelspec.architecture without "/lora"
    modelspec_implementation: str
    sd_scripts_script: str  # the sd-scripts training script for this family
    bundled_configs: str  # folder in configs/ with the family's diffusers configs

    @property
    def bundled_config_dir(self) -> Path:
        return CONFIGS_DIR / self.bundled_configs

    @property
    def text_encoder_prefixes(self) -> tuple[str, ...]:
        return self.lora_prefixes[1:]


SD1 = FamilyTraits(
    id="sd1", label="SD 1.x", default_resolution=512, bucket_reso_steps=64, bucket_step_multiple=8,
    latent_scale=0.18215, prediction_type=EPSILON, v2=False, v2_switches=True,
    lora_prefixes=("lora_unet", "lora_te"), pad_tokens=("<|endoftext|>",),
    own_fields=(), ignored_fields=(), text_encoder_switches=(), vae_overflows_in_fp16=False,
    base_model_version="sd_v1", modelspec_architecture="stable-diffusion-v1",
    modelspec_implementation="diffusers", sd_scripts_script="train_network.py", bundled_configs="sd15",
)
SD2 = replace(
    SD1, id="sd2", label="SD 2.x", v2=True, pad_tokens=("!",),  # OpenCLIP pads with token 0
    base_model_version="sd_v2", modelspec_architecture="stable-diffusion-v2-512", bundled_configs="sd21",
)
SDXL_TEXT_ENCODER_SWITCHES = ("network_train_text_encoder_1", "network_train_text_encoder_2")
SDXL = FamilyTraits(
    id="sdxl", label="SDXL", default_resolution=1024,
    # the UNet halves the latents twice: pixel sides must be multiples of 8 * 4
    bucket_reso_steps=32, bucket_step_multiple=32,
    latent_scale=0.13025, prediction_type=EPSILON, v2=False, v2_switches=False,
    lora_prefixes=("lora_unet", "lora_te1", "lora_te2"), pad_tokens=("<|endoftext|>", "!"),
    own_fields=(*SDXL_TEXT_ENCODER_SWITCHES, "no_half_vae", "cache_text_encoder_outputs",
                "cache_text_encoder_outputs_to_disk"),
    ignored_fields=("clip_skip",),  # SDXL always uses the penultimate layers of both text encoders
    text_encoder_switches=SDXL_TEXT_ENCODER_SWITCHES, vae_overflows_in_fp16=True,
    base_model_version="sdxl_base_v1-0", modelspec_architecture="stable-diffusion-xl-v1-base",
    modelspec_implementation="https://github.com/Stability-AI/generative-models",
    sd_scripts_script="sdxl_train_network.py", bundled_configs="sdxl",
)

TRAITS: dict[str, FamilyTraits] = {t.id: t for t in (SD1, SD2, SDXL)}
# The v-prediction variants (sd-scripts: "_v" in the version; SD 2.x 768-v models train at 768).
_V_PREDICTION: dict[str, FamilyTraits] = {
    "sd1": replace(SD1, prediction_type=V_PREDICTION, base_model_version="sd_v1_v"),
    "sd2": replace(SD2, prediction_type=V_PREDICTION, default_resolution=768, base_model_version="sd_v2_v",
                   modelspec_architecture="stable-diffusion-v2-768-v"),
    "sdxl": replace(SDXL, prediction_type=V_PREDICTION),
}


def family_traits(family: str, v_parameterization: bool = False) -> FamilyTraits:
    """The traits of family "sd1" | "sd2" | "sdxl" ("sd2-v", the writer's name of SD 2.x 768-v, too)."""
    if family.endswith("-v"):
        family, v_parameterization = family[:-2], True
    if family not in TRAITS:
        raise ValueError(f"Unknown model family {family!r}; known: {', '.join(TRAITS)}.")
    return _V_PREDICTION[family] if v_parameterization else TRAITS[family]


def known_traits(family: Optional[str]) -> Optional[FamilyTraits]:
    """The traits of `family`, or None when the family is unknown ("" or None: not detected yet)."""
    return TRAITS.get(family or "")


def family_label(family: str) -> str:
    traits = known_traits(family)
    return traits.label if traits else family


def family_only_fields() -> tuple[str, ...]:
    """Config fields that exist for some families only (shown and used only for those)."""
    return tuple(dict.fromkeys(name for traits in TRAITS.values() for name in traits.own_fields))


def field_applies(name: str, family: Optional[str]) -> bool:
    """Whether config field `name` applies to `family` (a family-only field needs its family known)."""
    traits = known_traits(family)
    return name not in family_only_fields() or (traits is not None and name in traits.own_fields)
