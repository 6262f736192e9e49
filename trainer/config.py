"""The one parameter set of a training run.

`TrainConfig` is the single source of truth: the web UI builds its fields from the
metadata attached here (label, help, choices, range, tab), presets are its flat JSON,
and the engine reads it. Field names are sd-scripts argument names wherever one exists.

This module must import without torch: the web process uses it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from trainer.families.model_info import MODEL_FILE_SUFFIXES
from trainer.findings import Finding
# FieldError, coerce_value, field_type and param are re-exported: `from trainer.config import param` keeps working.
from trainer.params import FOLDER, LORA_SUFFIXES, FieldError, ParamError, coerce_value, field_type, param, read_values  # noqa: F401

FORMAT_VERSION = 1
MODEL_ACCEPTS = FOLDER + MODEL_FILE_SUFFIXES  # a base model or VAE: a diffusers folder or one file
# format_version v -> v + 1 (trainer.params.read_values applies them to older presets)
MIGRATIONS: dict = {}

# Tabs and sections in kohya_ss order. The UI arranges fields by these names.
TABS = ("source_model", "folders", "parameters", "advanced", "samples")


LR_SCHEDULERS = (
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "adafactor",
)
OPTIMIZERS = (
    "AdamW",
    "AdamW8bit",
    "PagedAdamW8bit",
    "Lion",
    "Lion8bit",
    "SGDNesterov",
    "SGDNesterov8bit",
    "Adafactor",
    "Prodigy",
    "DAdaptAdam",
    "CAME",
)
# kohya's sampler names -> the diffusers scheduler class (by name: this module stays torch-free) and the
# config values that sampler needs. The one definition: the form's choices and the sampler both read it.
SAMPLER_SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "lms": ("LMSDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm_2": ("KDPM2DiscreteScheduler", {}),
    "dpm_2_a": ("KDPM2AncestralDiscreteScheduler", {}),
}
SAMPLERS = tuple(SAMPLER_SCHEDULERS)
PRECISIONS = ("no", "fp16", "bf16")
SAVE_PRECISIONS = ("float", "fp16", "bf16")


def parse_resolution(text: str) -> tuple[int, int]:
    """'512' -> (512, 512); '512,768' -> (512, 768) as (width, height)."""
    parts = [p.strip() for p in str(text).replace("x", ",").split(",") if p.strip()]
    if len(parts) not in (1, 2):
        raise ValueError(f"resolution must be \"512\" or \"width,height\", got {text!r}")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"resolution must be whole numbers, got {text!r}") from None
    if any(n < 64 or n > 8192 for n in nums):
        raise ValueError(f"resolution sides must be between 64 and 8192, got {text!r}")
    return (nums[0], nums[-1])


def check_warmup_steps(value: float) -> None:
    """lr_warmup_steps: a whole number of steps, or a fraction of the run below 1."""
    if value >= 1 and not float(value).is_integer():
        raise ValueError("must be a whole number of steps, or a fraction below 1")


@dataclass
class TrainConfig:
    # ---- Source model -------------------------------------------------------------
    pretrained_model_name_or_path: str = param(
        "", "Base model: a diffusers folder, a single .safetensors/.ckpt file, or a Hugging Face id already in the local cache.",
        tab="source_model", label="Pretrained model name or path", widget="path",
        accept=MODEL_ACCEPTS)
    v2: bool = param(False, "Stable Diffusion 2.x model. Detected from the weights when possible.",
                     tab="source_model", label="SD 2.x (v2)")
    v_parameterization: bool = param(
        False, "The model predicts v (SD 2.x 768-v models). Detected from the weights when possible.",
        tab="source_model", label="v-parameterization")
    vae: str = param("", "Optional separate VAE (file or diffusers folder) to use instead of the model's own.",
                     tab="source_model", label="VAE", widget="path", accept=MODEL_ACCEPTS)
    clip_skip: int = param(1, "Use the output of the N-th last text-encoder layer (1 = last, 2 is common for anime models).",
                           tab="source_model", label="Clip skip", min=1, max=12)
    save_model_as: str = param("safetensors", "File format of the saved LoRA.", tab="source_model",
                               label="Save trained model as", choices=("safetensors", "ckpt", "pt"))
    save_precision: str = param("fp16", "Precision of the saved LoRA weights.", tab="source_model",
                                label="Save precision", choices=SAVE_PRECISIONS)

    # ---- Folders ------------------------------------------------------------------
    train_data_dir: str = param(
        "", "Image folder: the PARENT of folders named <repeats>_<token> <class>, e.g. img/ containing 10_sks woman/.",
        tab="folders", label="Image folder", widget="path", accept=FOLDER)
    reg_data_dir: str = param("", "Regularisation image folder: the parent of <repeats>_<class> folders (optional).",
                              tab="folders", label="Regularisation folder", widget="path",
                              accept=FOLDER)
    output_dir: str = param("", "Folder where LoRA files, samples and the event log are written.",
                            tab="folders", label="Output folder", widget="path", accept=FOLDER)
    output_name: str = param("last", "File name (without extension) of the trained LoRA.",
                             tab="folders", label="Output name")
    logging_dir: str = param("", "Folder for TensorBoard logs (optional).", tab="folders", label="Logging folder",
                             widget="path", accept=FOLDER)
    training_comment: str = param("", "Free text stored in the file (ss_training_comment), e.g. the trigger word.",
                                  tab="folders", section="metadata", label="Training comment")
    metadata_title: str = param("", "Title stored in the file's model spec (default: output name).", tab="folders",
                                section="metadata", label="Metadata title")
    metadata_author: str = param("", "Author stored in the file's model spec.", tab="folders", section="metadata",
                                 label="Metadata author")
    metadata_description: str = param("", "Description stored in the file's model spec.", tab="folders",
                                      section="metadata", label="Metadata description")
    metadata_license: str = param("", "License stored in the file's model spec.", tab="folders", section="metadata",
                                  label="Metadata license")
    metadata_tags: str = param("", "Comma-separated tags stored in the file's model spec.", tab="folders",
                               section="metadata", label="Metadata tags")

    # ---- Parameters: basic --------------------------------------------------------
    train_batch_size: int = param(1, "Images per step. Larger needs more memory.", tab="parameters",
                                  label="Train batch size", min=1, max=64)
    max_train_epochs: int = param(10, "Number of epochs (passes over all images x repeats).", tab="parameters",
                                  label="Max train epochs", min=1, max=10000)
    max_train_steps: int = param(0, "Total optimizer steps; overrides epochs when above 0.", tab="parameters",
                                 label="Max train steps", min=0, max=10_000_000)
    save_every_n_epochs: int = param(1, "Save a LoRA every N epochs (0 = only at the end).", tab="parameters",
                                     label="Save every N epochs", min=0, max=10000)
    caption_extension: str = param(".txt", "Extension of caption files next to the images (.txt, .caption or .cap).", tab="parameters",
                                   label="Caption file extension")
    seed: int = param(42, "Random seed; the same seed and settings give the same run.", tab="parameters",
                      label="Seed", min=0, max=2**32 - 1)
    mixed_precision: str = param("fp16", "Compute precision. fp16/bf16 need a GPU; on a CPU fp32 (no) is used.",
                                 tab="parameters", label="Mixed precision", choices=PRECISIONS)
    cache_latents: bool = param(True, "Encode every image with the VAE once before training (faster, less memory).",
                                tab="parameters", label="Cache latents")
    cache_latents_to_disk: bool = param(False, "Keep cached latents in .npz files beside the images for later runs.",
                                        tab="parameters", label="Cache latents to disk")
    lr_scheduler: str = param("cosine", "How the learning rate changes over the run.", tab="parameters",
                              label="LR scheduler", choices=LR_SCHEDULERS)
    optimizer_type: str = param("AdamW", "Optimizer. 8bit variants need bitsandbytes and save memory.",
                                tab="parameters", label="Optimizer", choices=OPTIMIZERS)
    optimizer_args: str = param("", "Extra optimizer arguments as key=value pairs, e.g. weight_decay=0.01 betas=0.9,0.99.",
                                tab="parameters", label="Optimizer extra arguments")
    learning_rate: float = param(1e-4, "Base learning rate (used where UNet/text-encoder rates are blank).",
                                 tab="parameters", label="Learning rate", min=0.0, max=10.0)
    unet_lr: Optional[float] = param(None, "UNet learning rate. Blank = learning rate; 0 = do not train the UNet.",
                                     tab="parameters", label="UNet learning rate", min=0.0, max=10.0)
    text_encoder_lr: Optional[float] = param(
        None, "Text-encoder learning rate. Blank = learning rate; 0 = do not train the text encoder.",
        tab="parameters", label="Text encoder learning rate", min=0.0, max=10.0)
    lr_warmup_steps: float = param(0, "Warmup steps: a whole number of steps, or a fraction (<1) of total steps.",
                                   tab="parameters", label="LR warmup steps", min=0.0, max=1_000_000,
                                   check=check_warmup_steps)
    lr_scheduler_num_cycles: int = param(1, "Restarts for cosine_with_restarts.", tab="parameters",
                                         label="LR number of cycles", min=1, max=1000)
    lr_scheduler_power: float = param(1.0, "Power of the polynomial scheduler.", tab="parameters",
                                      label="LR power", min=0.0, max=100.0)
    max_grad_norm: float = param(1.0, "Clip gradients to this norm (0 = no clipping).", tab="parameters",
                                 label="Max grad norm", min=0.0, max=1000.0)
    resolution: str = param("512", "Training resolution: \"512\" or \"width,height\".", tab="parameters",
                            label="Max resolution", check=parse_resolution)
    enable_bucket: bool = param(True, "Group images by aspect ratio instead of cropping all to a square.",
                                tab="parameters", label="Enable buckets")
    min_bucket_reso: int = param(256, "Smallest bucket side in pixels.", tab="parameters",
                                 label="Minimum bucket resolution", min=64, max=4096, step=64)
    max_bucket_reso: int = param(1024, "Largest bucket side in pixels.", tab="parameters",
                                 label="Maximum bucket resolution", min=64, max=4096, step=64)
    lora_type: str = param("Standard", "Standard LoRA (attention and MLP layers) or LoCon (also the 3x3 convolutions).",
                           tab="parameters", label="LoRA type", choices=("Standard", "LoCon"),
                           sd_scripts="network_module")
    network_dim: int = param(8, "LoRA rank (dimension). Larger learns more detail and makes bigger files.",
                             tab="parameters", label="Network rank (dimension)", min=1, max=1024)
    network_alpha: float = param(1.0, "LoRA alpha; the update is scaled by alpha / rank.", tab="parameters",
                                 label="Network alpha", min=0.0, max=1024.0)
    conv_dim: int = param(4, "Rank of the 3x3 convolution LoRA (LoCon only).", tab="parameters",
                          label="Convolution rank (dimension)", min=1, max=1024,
                          sd_scripts="network_args")
    conv_alpha: float = param(1.0, "Alpha of the 3x3 convolution LoRA (LoCon only).", tab="parameters",
                              label="Convolution alpha", min=0.0, max=1024.0,
                              sd_scripts="network_args")
    network_weights: str = param("", "Start from an existing LoRA file (weights only).", tab="parameters",
                                 label="Network weights", widget="path", accept=LORA_SUFFIXES)

    # ---- Advanced -----------------------------------------------------------------
    network_dropout: float = param(0.0, "Dropout on the LoRA down-projection output.", tab="advanced", section="network",
                                   label="Network dropout", min=0.0, max=1.0)
    network_train_unet_only: bool = param(False, "Train only the UNet LoRA.", tab="advanced", section="network",
                                          label="Train UNet only")
    network_train_text_encoder_only: bool = param(False, "Train only the text-encoder LoRA.", tab="advanced", section="network",
                                                  label="Train text encoder only")
    network_train_text_encoder_1: bool = param(
        True, "SDXL only: give text encoder 1 (CLIP ViT-L) a LoRA when the text encoder is trained. "
        "Off: that encoder stays as it is and is not saved in the file.",
        tab="advanced", section="network", label="Train text encoder 1 (SDXL)", sd_scripts=False)
    network_train_text_encoder_2: bool = param(
        True, "SDXL only: give text encoder 2 (OpenCLIP ViT-bigG) a LoRA when the text encoder is trained. "
        "Off: that encoder stays as it is and is not saved in the file.",
        tab="advanced", section="network", label="Train text encoder 2 (SDXL)", sd_scripts=False)
    scale_weight_norms: float = param(0.0, "Max-norm regularisation of each LoRA module (0 = off, 1 is typical).",
                                      tab="advanced", section="network", label="Scale weight norms", min=0.0, max=10.0)
    gradient_accumulation_steps: int = param(1, "Accumulate gradients over N batches per optimizer step.",
                                             tab="advanced", section="memory", label="Gradient accumulation steps", min=1, max=120)
    gradient_checkpointing: bool = param(False, "Recompute activations in the backward pass: less memory, slower.",
                                         tab="advanced", section="memory", label="Gradient checkpointing")
    sdpa: bool = param(True, "Use PyTorch scaled-dot-product attention.", tab="advanced", section="memory", label="SDPA attention")
    xformers: bool = param(False, "Use xformers memory-efficient attention (CUDA only, optional package).",
                           tab="advanced", section="memory", label="xformers attention")
    fp8_base: bool = param(False, "Store the frozen base model's linear, convolution and embedding weights in fp8 "
                           "(float8_e4m3fn), each cast up only for its own layer's computation. With gradient "
                           "checkpointing about half the model's memory in bf16/fp16; a little slower.", tab="advanced",
                           section="memory", label="fp8 base model")
    torch_compile: bool = param(False, "Compile the UNet with torch.compile: the first steps take minutes, the "
                                "rest run faster (mostly on a GPU).", tab="advanced", section="memory",
                                label="Torch compile")
    dynamo_backend: str = param("inductor", "torch.compile backend (inductor generates fused kernels; eager and "
                                "aot_eager only check that the model compiles).", tab="advanced", section="memory",
                                label="Dynamo backend", choices=("inductor", "aot_eager", "eager", "cudagraphs"))
    full_fp16: bool = param(False, "Keep the LoRA weights in fp16 too (needs mixed precision fp16).",
                            tab="advanced", section="memory", label="Full fp16 training")
    full_bf16: bool = param(False, "Keep the LoRA weights in bf16 too (needs mixed precision bf16).",
                            tab="advanced", section="memory", label="Full bf16 training")
    no_half_vae: bool = param(
        True, "Run the VAE in fp32 under mixed precision (avoids NaN latents and black samples, needs a little "
        "more memory). Off: the VAE runs in fp16/bf16, except SDXL's VAE with fp16, which overflows and "
        "always runs in fp32.", tab="advanced", section="memory", label="No half VAE")
    cache_text_encoder_outputs: bool = param(
        False, "Encode every caption once before training and move the text encoders off the GPU (saves "
        "memory, mostly for SDXL). Needs a frozen text encoder ('Train UNet only' or text-encoder learning "
        "rate 0) and captions that do not change (no shuffling, no caption dropout).",
        tab="advanced", section="memory", label="Cache text encoder outputs")
    cache_text_encoder_outputs_to_disk: bool = param(
        False, "Also keep the cached text-encoder outputs in <image>_te_outputs.npz files beside the images, "
        "reused by later runs with the same model and captions (turns caching on).",
        tab="advanced", section="memory", label="Cache text encoder outputs to disk")
    max_data_loader_n_workers: int = param(0, "Data loader worker processes (0 = load in the main process).",
                                           tab="advanced", section="memory", label="Max data loader workers", min=0, max=64)
    persistent_data_loader_workers: bool = param(False, "Keep data loader workers alive between epochs.",
                                                 tab="advanced", section="memory", label="Persistent data loader workers")
    bucket_reso_steps: int = param(64, "Bucket sides are multiples of this many pixels.", tab="advanced", section="buckets",
                                   label="Bucket resolution steps", min=8, max=256)
    bucket_no_upscale: bool = param(False, "Never upscale small images to fill a bucket.", tab="advanced", section="buckets",
                                    label="Don't upscale bucket resolution")
    color_aug: bool = param(False, "Random hue shifts (disables latent caching).", tab="advanced", section="captions",
                            label="Color augmentation")
    flip_aug: bool = param(False, "Random horizontal flips.", tab="advanced", section="captions", label="Flip augmentation")
    random_crop: bool = param(False, "Random instead of centred crops (disables latent caching).", tab="advanced", section="captions",
                              label="Random crop")
    shuffle_caption: bool = param(False, "Shuffle the comma-separated tags of each caption.", tab="advanced", section="captions",
                                  label="Shuffle caption")
    keep_tokens: int = param(0, "Keep the first N comma-separated tags in place when shuffling.", tab="advanced", section="captions",
                             label="Keep n tokens", min=0, max=32)
    caption_dropout_rate: float = param(0.0, "Probability of training an image with an empty caption.",
                                        tab="advanced", section="captions", label="Rate of caption dropout", min=0.0, max=1.0)
    caption_dropout_every_n_epochs: int = param(0, "Drop all captions every N epochs (0 = never).", tab="advanced", section="captions",
                                                label="Dropout caption every n epochs", min=0, max=10000)
    max_token_length: int = param(75, "Longest caption in tokens (longer captions are encoded in 75-token chunks).",
                                  tab="advanced", section="captions", label="Max token length", choices=(75, 150, 225),
                                  sd_scripts="unless_default")
    noise_offset_type: str = param("Original", "Kind of extra noise.", tab="advanced", section="noise", label="Noise offset type",
                                   choices=("Original", "Multires"), sd_scripts="implied")
    noise_offset: float = param(0.0, "Noise offset (0.05-0.1 helps very dark or bright images).", tab="advanced", section="noise",
                                label="Noise offset", min=0.0, max=1.0)
    multires_noise_iterations: int = param(6, "Multires noise iterations (Multires only).", tab="advanced", section="noise",
                                           label="Multires noise iterations", min=0, max=64)
    multires_noise_discount: float = param(0.3, "Multires noise discount (Multires only).", tab="advanced", section="noise",
                                           label="Multires noise discount", min=0.0, max=1.0)
    min_snr_gamma: float = param(0.0, "Min-SNR loss weighting gamma (0 = off, 5 is typical).", tab="advanced", section="noise",
                                 label="Min SNR gamma", min=0.0, max=20.0)
    prior_loss_weight: float = param(1.0, "Loss weight of regularisation images.", tab="advanced", section="noise",
                                     label="Prior loss weight", min=0.0, max=10.0)
    min_timestep: int = param(0, "Smallest diffusion timestep sampled.", tab="advanced", section="noise", label="Min timestep",
                              min=0, max=1000)
    max_timestep: int = param(1000, "Largest diffusion timestep sampled (exclusive).", tab="advanced", section="noise",
                              label="Max timestep", min=1, max=1000)
    save_every_n_steps: int = param(0, "Also save a LoRA every N steps (0 = off).", tab="advanced", section="saving",
                                    label="Save every N steps", min=0, max=10_000_000)
    save_state: bool = param(False, "Save optimizer, scheduler and RNG state with each save, for resuming.",
                             tab="advanced", section="saving", label="Save training state")
    resume: str = param("", "Resume from a saved state folder (<name>-state).", tab="advanced", section="saving",
                        label="Resume from saved training state", widget="path",
                        accept=FOLDER)
    # Accelerate launch (kohya_ss's names): with more than one process the engine relaunches itself
    # through `accelerate launch` (trainer/distributed.py).
    num_processes: int = param(1, "Training processes, one per GPU (over several machines: all of them). The batch "
                               "size is per process.", tab="advanced", section="accelerate", label="Number of processes",
                               min=1, max=1024, sd_scripts="launch")
    num_machines: int = param(1, "Machines taking part (each runs the same command with its own machine rank).",
                              tab="advanced", section="accelerate", label="Number of machines", min=1, max=1024,
                              sd_scripts="launch")
    gpu_ids: str = param("", "GPUs of this machine to use, e.g. 0,1 (empty: all).", tab="advanced",
                         section="accelerate", label="GPU IDs", sd_scripts="launch")
    machine_rank: int = param(0, "This machine's rank, 0 to machines - 1 (0 is the main machine, which writes the "
                              "files).", tab="advanced", section="accelerate", label="Machine rank", min=0, max=1023,
                              sd_scripts="launch")
    main_process_ip: str = param("", "Address of machine 0 (needed with several machines).", tab="advanced",
                                 section="accelerate", label="Main process IP", sd_scripts="launch")
    main_process_port: int = param(0, "Port on machine 0 the processes meet on (0: a free port on one machine, "
                                   "29500 with several).", tab="advanced", section="accelerate",
                                   label="Main process port", min=0, max=65535, sd_scripts="launch")
    num_cpu_threads_per_process: int = param(0, "CPU threads of each process (0: the cores shared out between "
                                             "the processes).", tab="advanced", section="accelerate",
                                             label="CPU threads per process", min=0, max=1024, sd_scripts="launch")

    # ---- Samples ------------------------------------------------------------------
    sample_every_n_steps: int = param(0, "Generate sample images every N steps (0 = off).", tab="samples",
                                      label="Sample every n steps", min=0, max=10_000_000)
    sample_every_n_epochs: int = param(0, "Generate sample images every N epochs (0 = off).", tab="samples",
                                       label="Sample every n epochs", min=0, max=10000)
    sample_at_first: bool = param(False, "Also generate samples before training starts.", tab="samples",
                                  label="Sample before training")
    sample_sampler: str = param("euler_a", "Sampler used for sample images.", tab="samples", label="Sample sampler",
                                choices=SAMPLERS)
    sample_prompts: str = param(
        "", "One prompt per line; options: --n negative, --w width, --h height, --s steps, --l CFG scale, --d seed.",
        tab="samples", label="Sample prompts", widget="textarea", sd_scripts="file")

    # ------------------------------------------------------------------------------
    @classmethod
    def fields(cls) -> tuple[dataclasses.Field, ...]:
        return dataclasses.fields(cls)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"format_version": FORMAT_VERSION}
        data.update(dataclasses.asdict(self))
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, partial: bool = True) -> "TrainConfig":
        """Build a config from a flat dict, raising ConfigError naming every bad field.

        With partial=True missing keys keep their defaults (presets may be sparse).
        """
        values = read_values(cls, data, version=FORMAT_VERSION, migrations=MIGRATIONS, partial=partial)
        return cls(**values)

    @classmethod
    def load(cls, path: Union[str, Path]) -> "TrainConfig":
        text = Path(path).read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError([FieldError("", f"{path} is not valid JSON: {exc}")]) from None
        if not isinstance(data, dict):
            raise ConfigError([FieldError("", f"{path} must hold a JSON object")])
        return cls.from_dict(data)

    def save(self, path: Union[str, Path]) -> None:
        from trainer.fileio import atomic_write_text

        atomic_write_text(Path(path), self.to_json() + "\n")

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def validate(self) -> list["ValidationIssue"]:
        """Per-field errors and warnings (see trainer.validation)."""
        from trainer.validation import validate

        return validate(self)

    # Derived values the engine and UI both need -------------------------------------
    def resolution_wh(self) -> tuple[int, int]:
        return parse_resolution(self.resolution)

    def effective_unet_lr(self) -> float:
        if self.network_train_text_encoder_only:
            return 0.0
        return self.learning_rate if self.unet_lr is None else self.unet_lr

    def effective_text_encoder_lr(self) -> float:
        if self.network_train_unet_only:
            return 0.0
        return self.learning_rate if self.text_encoder_lr is None else self.text_encoder_lr

    def uses_conv_lora(self) -> bool:
        return self.lora_type == "LoCon"


# A run/preset file with bad fields (`errors` names each field): the parameter base's one error type.
ConfigError = ParamError


# One finding of validate(): the project's one finding type (trainer.findings), under its old name.
ValidationIssue = Finding


def iter_field_meta() -> Iterator[tuple[dataclasses.Field, dict[str, Any]]]:
    """Fields with their UI metadata, in declaration order."""
    for f in dataclasses.fields(TrainConfig):
        yield f, dict(f.metadata)
