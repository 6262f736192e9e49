"""What the training loop, the LoRA network and sampling need from a model family.

A family (SD1/SD2 in sd.py, SDXL in sdxl.py) is a `ModelFamily` subclass. The loop only calls these methods,
so a family with two text encoders or extra UNet conditioning (SDXL's size/crop embeddings, read
from the `batch` dict in `predict`) plugs in without changes elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from trainer.errors import TrainingError
from trainer.families.detect import ModelInfo

if TYPE_CHECKING:
    import torch
    from diffusers import DDPMScheduler, DiffusionPipeline

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

    prefix: str  # "lora_unet", "lora_te" (SDXL: "lora_te1", "lora_te2")
    module: Any  # torch.nn.Module
    kind: str  # "unet" | "text_encoder"


class XformersUnavailableError(TrainingError):
    """xformers attention was requested where it cannot run."""

    def __init__(self, message: str, hint: str = "Turn off 'xformers attention'; SDPA attention is used instead."):
        super().__init__("xformers_unavailable", message, field="xformers", hint=hint)


class ModelFamily:
    """Base class; subclasses set the class attributes and implement the model-specific methods."""

    name: str = ""
    latent_scale: float = 1.0
    default_resolution: int = 512
    bucket_reso_steps: int = 64

    def __init__(self, info: Optional[ModelInfo] = None):
        self.info = info

    # ---- identity --------------------------------------------------------------------------
    def base_model_version(self, info: ModelInfo) -> str:
        """`ss_base_model_version` of the LoRA metadata."""
        raise NotImplementedError

    def modelspec_architecture(self, info: ModelInfo) -> str:
        """The base-model part of `modelspec.architecture` (the writer appends "/lora")."""
        raise NotImplementedError

    def modelspec_implementation(self, info: ModelInfo) -> str:
        """`modelspec.implementation` of the LoRA metadata: the code base the key names follow."""
        return "diffusers"

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
        """The UNet output (epsilon or v, see `prediction_type`)."""
        raise NotImplementedError

    def prediction_type(self, comp: Components) -> str:
        return comp.scheduler_config.get("prediction_type", "epsilon")

    def noise_scheduler(self, comp: Components) -> "DDPMScheduler":
        """The DDPM scheduler the training loop adds noise with."""
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_config(comp.scheduler_config)

    def training_target(self, comp: Components, scheduler: "DDPMScheduler", latents: "torch.Tensor",
                        noise: "torch.Tensor", timesteps: "torch.Tensor") -> "torch.Tensor":
        """What `predict` is trained to output: the noise, or v = sqrt(a)*noise - sqrt(1-a)*latents."""
        if self.prediction_type(comp) == "v_prediction":
            return scheduler.get_velocity(latents, noise, timesteps)
        return noise

    def vae_dtype(self, weight_dtype: "torch.dtype", *, no_half_vae: bool) -> tuple["torch.dtype", str]:
        """The VAE's dtype under mixed precision `weight_dtype`, and a note for the log when the family
        overrides the setting ("" otherwise). fp32 with no_half_vae, else the mixed-precision dtype."""
        import torch

        return (torch.float32 if no_half_vae else weight_dtype), ""

    def enable_gradient_checkpointing(self, comp: Components, *, text_encoder: bool = True) -> None:
        raise NotImplementedError

    def enable_sdpa(self, comp: Components) -> None:
        raise NotImplementedError

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
