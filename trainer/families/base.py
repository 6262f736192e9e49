"""What the training loop, the LoRA network and sampling need from a model family.

A family (SD1/SD2 in sd.py, SDXL in sdxl.py) is a `ModelFamily` subclass. The loop only calls these methods,
so a family with two text encoders or extra UNet conditioning (SDXL's size/crop embeddings, read
from the `batch` dict in `predict`) plugs in without changes elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from trainer.errors import TrainingError
from trainer.families.model_info import ModelInfo
from trainer.families.traits import FamilyTraits, family_traits

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline

    from trainer.config import TrainConfig


@dataclass
class Components:
    """The loaded model parts, fp32 on the CPU after `ModelFamily.load` (the engine moves them)."""

    unet: Any
    vae: Any
    text_encoders: list
    tokenizers: list
    scheduler_config: dict
    info: ModelInfo
    extras: dict = field(default_factory=dict)

    @property
    def text_encoder(self) -> Any:
        return self.text_encoders[0]

    @property
    def tokenizer(self) -> Any:
        return self.tokenizers[0]


@dataclass(frozen=True)
class LoraRoot:
    """A model part that receives LoRA modules, and the kohya name prefix of those modules."""

    prefix: str  # one of the family's traits.lora_prefixes
    module: Any  # torch.nn.Module
    kind: str  # "unet" | "text_encoder"


class XformersUnavailableError(TrainingError):
    """xformers attention was requested where it cannot run."""

    def __init__(self, message: str, hint: str = "Turn off 'xformers attention'; SDPA attention is used instead."):
        super().__init__("xformers_unavailable", message, field="xformers", hint=hint)


class ModelFamily:
    """Base class; subclasses set `name` (the key of their traits) and implement loading and encoding."""

    name: str = ""

    def __init__(self, info: Optional[ModelInfo] = None):
        self.info = info

    # ---- identity (from the torch-free traits) ----------------------------------------------
    @property
    def traits(self) -> FamilyTraits:
        """This family's traits; the v-prediction variant when the model predicts v."""
        return family_traits(self.name, bool(self.info and self.info.v_parameterization))

    @property
    def latent_scale(self) -> float:
        return self.traits.latent_scale

    def base_model_version(self, info: ModelInfo) -> str:
        """`ss_base_model_version` of the LoRA metadata."""
        return family_traits(self.name, bool(info.v_parameterization)).base_model_version

    def modelspec_architecture(self, info: ModelInfo) -> str:
        """The base-model part of `modelspec.architecture` (the writer appends "/lora")."""
        return family_traits(self.name, bool(info.v_parameterization)).modelspec_architecture

    def modelspec_implementation(self, info: ModelInfo) -> str:
        """`modelspec.implementation` of the LoRA metadata: the code base the key names follow."""
        return self.traits.modelspec_implementation

    # ---- loading ---------------------------------------------------------------------------
    def load(self, cfg: "TrainConfig", info: ModelInfo) -> Components:
        """Load the components: fp32, on the CPU, frozen (requires_grad False)."""
        raise NotImplementedError

    # ---- training --------------------------------------------------------------------------
    def encode_prompts(self, comp: Components, captions: list[str], *, clip_skip: int,
                       max_token_length: int) -> dict[str, "torch.Tensor"]:
        """UNet conditioning kwargs for the captions; differentiable w.r.t. text-encoder LoRA."""
        raise NotImplementedError

    def predict(self, comp: Components, noisy_latents: "torch.Tensor", timesteps: "torch.Tensor",
                cond: dict, batch: dict) -> "torch.Tensor":
        """The UNet output (epsilon or v: the prediction_type of `comp.scheduler_config`)."""
        raise NotImplementedError

    def vae_dtype(self, weight_dtype: "torch.dtype", *, no_half_vae: bool) -> tuple["torch.dtype", str]:
        """The VAE's dtype under mixed precision `weight_dtype`, and a note for the log when the family
        overrides the setting ("" otherwise). fp32 with no_half_vae, else the mixed-precision dtype,
        except fp16 for a VAE that overflows in it."""
        import torch

        if self.traits.vae_overflows_in_fp16 and weight_dtype == torch.float16 and not no_half_vae:
            return torch.float32, (f"The {self.traits.label} VAE overflows in fp16 (NaN latents, black images), "
                                   "so it runs in fp32 although 'No half VAE' is off.")
        return (torch.float32 if no_half_vae else weight_dtype), ""

    def enable_gradient_checkpointing(self, comp: Components, *, text_encoder: bool = True) -> None:
        raise NotImplementedError

    def enable_sdpa(self, comp: Components) -> None:
        raise NotImplementedError

    def enable_default_attention(self, comp: Components) -> None:
        raise NotImplementedError

    def set_attention(self, comp: Components, choice: str) -> None:
        """'sdpa' (PyTorch's fused kernels), 'xformers', or 'default' (diffusers' plain attention)."""
        {"sdpa": self.enable_sdpa, "xformers": self.enable_xformers,
         "default": self.enable_default_attention}[choice](comp)

    def enable_xformers(self, comp: Components) -> None:
        raise NotImplementedError

    # ---- LoRA ------------------------------------------------------------------------------
    def lora_roots(self, comp: Components) -> list[LoraRoot]:
        raise NotImplementedError

    def kohya_module_name(self, root: LoraRoot, module_path: str) -> str:
        """Full kohya module name without the .lora_down/.lora_up/.alpha suffix."""
        raise NotImplementedError

    # ---- sampling --------------------------------------------------------------------------
    def sampling_pipeline(self, comp: Components, sampler: str) -> "DiffusionPipeline":
        """A diffusers pipeline over the components in memory (nothing is reloaded)."""
        raise NotImplementedError

    def sampling_kwargs(self, comp: Components, prompt: str, negative_prompt: str, *, clip_skip: int,
                        max_token_length: int) -> dict[str, Any]:
        """Pipeline call kwargs that condition one sample image (prompt embeddings and the like)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
