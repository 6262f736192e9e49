"""Stable Diffusion 1.x and 2.x: one UNet, one CLIP text encoder, a KL VAE scaled by 0.18215.

Prompt encoding follows sd-scripts exactly (clip_skip, 75-token chunks for max_token_length
150/225, SD1 vs SD2 padding), so a LoRA trained here sees the same conditioning as one trained there.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import torch

from trainer.families.base import Components, LoraRoot, ModelFamily, XformersUnavailableError
from trainer.families.model_info import ModelInfo, ModelPathError
from trainer.families.scheduler_config import folder_scheduler_config, training_scheduler_config
from trainer.families.single_file import load_single_file_components, load_vae, read_checkpoint
from trainer.families.tokenizers import load_model_tokenizer
from trainer.machine import xformers_installed

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline

    from trainer.config import TrainConfig


class StableDiffusionFamily(ModelFamily):
    """Shared SD1/SD2 behaviour; subclasses differ in their traits (tokenizer padding, bundled configs)."""

    # ---- loading ---------------------------------------------------------------------------
    def load(self, cfg: "TrainConfig", info: ModelInfo) -> Components:
        """Load fp32 components on the CPU, frozen, with SDPA attention; cfg.vae replaces the VAE.

        SDPA is used even when cfg.sdpa is off: it is PyTorch's default and the fastest exact attention.
        xformers is switched on by the engine (`enable_xformers`) once the models are on the GPU.
        """
        if info.kind == "single_file":
            state_dict, configs = read_checkpoint(info.path)
            unet, vae, text_encoder = load_single_file_components(
                state_dict, configs, self.name, name=Path(info.path).name)
            model_scheduler = (configs or {}).get("scheduler")
        else:
            unet, vae, text_encoder = _load_diffusers_folder(info.path)
            model_scheduler = folder_scheduler_config(info.path)
        if getattr(cfg, "vae", ""):
            vae = load_vae(cfg.vae, vae.config)
        for model in (unet, vae, text_encoder):
            model.requires_grad_(False)

        # A diffusers folder's own tokenizer (its text encoder is sized for it); single files get the bundled one.
        tokenizer = load_model_tokenizer(info.path, "tokenizer", text_encoder, pad_token=self.traits.pad_tokens[0],
                                         from_folder=info.kind != "single_file")
        comp = Components(
            unet=unet,
            vae=vae,
            text_encoders=[text_encoder],
            tokenizers=[tokenizer],
            scheduler_config=training_scheduler_config(self.name, model_scheduler,
                                                       v_parameterization=bool(info.v_parameterization)),
            info=info,
        )
        self.enable_sdpa(comp)
        return comp

    # ---- text conditioning -----------------------------------------------------------------
    def tokenize(self, comp: Components, captions: list[str], *, max_token_length: int) -> torch.Tensor:
        """Token ids of shape (batch, chunks, 77), chunked like sd-scripts' `_get_input_ids`.

        For 150/225 tokens the caption is tokenized to max_token_length + 2 and cut into 75-token
        pieces, each wrapped in BOS ... EOS/PAD. With SD2's "!" padding a piece that ends in a content
        token gets EOS as its last token, and an empty piece starts with EOS, as sd-scripts does.
        """
        tokenizer = comp.tokenizer
        chunk_len = tokenizer.model_max_length  # 77
        total = max_token_length + 2
        ids = tokenizer(captions, padding="max_length", truncation=True, max_length=max(total, chunk_len),
                        return_tensors="pt").input_ids
        if total <= chunk_len:
            return ids[:, None, :]

        body = chunk_len - 2
        eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
        chunks = []
        for start in range(1, total - chunk_len + 2, body):
            chunk = torch.cat([ids[:, :1], ids[:, start:start + body], ids[:, -1:]], dim=1)
            if pad != eos:
                ends_in_content = (chunk[:, -2] != eos) & (chunk[:, -2] != pad)
                chunk[:, -1] = torch.where(ends_in_content, eos, chunk[:, -1])
                chunk[:, 1] = torch.where(chunk[:, 1] == pad, eos, chunk[:, 1])
            chunks.append(chunk)
        return torch.stack(chunks, dim=1)

    def encode_prompts(self, comp: Components, captions: list[str], *, clip_skip: int = 1,
                       max_token_length: int = 75) -> dict[str, torch.Tensor]:
        """{"encoder_hidden_states": (batch, 77 | 152 | 227, width)}, as sd-scripts' SdTextEncodingStrategy.

        clip_skip N > 1 takes hidden_states[-N] and applies the final layer norm (1 = the normal output).
        SD2 is treated the same way: its diffusers text encoder already ends at OpenCLIP's penultimate
        layer (23 of 24), and sd-scripts counts clip_skip from there too.
        Chunks are encoded separately and joined as BOS + 75 tokens of each chunk + the last token.
        """
        text_encoder = comp.text_encoder
        ids = self.tokenize(comp, captions, max_token_length=max_token_length)
        batch, n_chunks, chunk_len = ids.shape
        ids = ids.reshape(-1, chunk_len).to(_device_of(text_encoder))
        hidden = _text_hidden_states(text_encoder, ids, clip_skip)
        hidden = hidden.reshape(batch, n_chunks * chunk_len, hidden.shape[-1])
        if n_chunks > 1:
            # sd-scripts also has an SD2 branch here, but its condition compares a token id with the
            # EOS *string* and is never true, so SD1 and SD2 join chunks the same way.
            body = chunk_len - 2
            pieces = [hidden[:, :1]]
            pieces += [hidden[:, i:i + body] for i in range(1, n_chunks * chunk_len, chunk_len)]
            pieces.append(hidden[:, -1:])
            hidden = torch.cat(pieces, dim=1)
        return {"encoder_hidden_states": hidden}

    # ---- denoising -------------------------------------------------------------------------
    def predict(self, comp: Components, noisy_latents: torch.Tensor, timesteps: torch.Tensor, cond: dict,
                batch: Optional[dict] = None) -> torch.Tensor:
        return comp.unet(noisy_latents, timesteps, **cond, return_dict=False)[0]

    def enable_gradient_checkpointing(self, comp: Components, *, text_encoder: bool = True) -> None:
        """Recompute activations in backward (transformers' text encoders only do so in train() mode)."""
        comp.unet.enable_gradient_checkpointing()
        if text_encoder:
            for te in comp.text_encoders:
                # Non-reentrant: the frozen base weights give reentrant checkpointing no input that needs grad.
                te.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})

    def enable_sdpa(self, comp: Components) -> None:
        from diffusers.models.attention_processor import AttnProcessor2_0

        comp.unet.set_attn_processor(AttnProcessor2_0())
        comp.vae.set_attn_processor(AttnProcessor2_0())

    def enable_default_attention(self, comp: Components) -> None:
        from diffusers.models.attention_processor import AttnProcessor

        comp.unet.set_attn_processor(AttnProcessor())
        comp.vae.set_attn_processor(AttnProcessor())

    def enable_xformers(self, comp: Components) -> None:
        if not torch.cuda.is_available():
            raise XformersUnavailableError("xformers attention needs an NVIDIA GPU (CUDA); none is available.")
        if not xformers_installed():
            raise XformersUnavailableError("xformers attention is selected but the xformers package is not installed.")
        try:
            comp.unet.enable_xformers_memory_efficient_attention()
            comp.vae.enable_xformers_memory_efficient_attention()
        except Exception as exc:  # diffusers test-runs a kernel; a broken install fails here
            raise XformersUnavailableError(f"xformers does not work on this machine: {exc}") from exc

    # ---- LoRA ------------------------------------------------------------------------------
    def lora_roots(self, comp: Components) -> list[LoraRoot]:
        unet_prefix, te_prefix = self.traits.lora_prefixes
        return [LoraRoot(unet_prefix, comp.unet, "unet"), LoraRoot(te_prefix, comp.text_encoder, "text_encoder")]

    def kohya_module_name(self, root: LoraRoot, module_path: str) -> str:
        """kohya names: the module path with '.' -> '_' after the prefix.

        sd-scripts' SD1/SD2 UNet uses diffusers module names. Its text encoder names include
        `text_model_`, which transformers 5's flattened CLIPTextModel no longer has, so it is added.
        """
        if root.kind == "text_encoder" and not module_path.startswith("text_model."):
            module_path = "text_model." + module_path
        return f"{root.prefix}_{module_path.replace('.', '_')}"

    # ---- sampling --------------------------------------------------------------------------
    def sampling_pipeline(self, comp: Components, sampler: str) -> "StableDiffusionPipeline":
        from diffusers import StableDiffusionPipeline

        from trainer.sampling import make_sampler

        pipe = StableDiffusionPipeline(
            vae=comp.vae,
            text_encoder=comp.text_encoder,
            tokenizer=comp.tokenizer,
            unet=comp.unet,
            scheduler=make_sampler(sampler, comp.scheduler_config),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def sampling_kwargs(self, comp: Components, prompt: str, negative_prompt: str, *, clip_skip: int = 1,
                        max_token_length: int = 75) -> dict[str, Any]:
        # Embeddings are computed here rather than by the pipeline so that clip_skip and long
        # prompts condition samples exactly as in training.
        encode = dict(clip_skip=clip_skip, max_token_length=max_token_length)
        return {
            "prompt_embeds": self.encode_prompts(comp, [prompt], **encode)["encoder_hidden_states"],
            "negative_prompt_embeds": self.encode_prompts(comp, [negative_prompt or ""], **encode)["encoder_hidden_states"],
        }


class SD1Family(StableDiffusionFamily):
    name = "sd1"


class SD2Family(StableDiffusionFamily):
    name = "sd2"


def _text_hidden_states(text_encoder: Any, ids: torch.Tensor, clip_skip: int) -> torch.Tensor:
    if clip_skip <= 1:
        return text_encoder(ids, return_dict=False)[0]  # last_hidden_state, final layer norm applied
    n_layers = text_encoder.config.num_hidden_layers
    if clip_skip > n_layers:
        raise ValueError(f"clip_skip {clip_skip} is larger than the text encoder's {n_layers} layers")
    out = text_encoder(ids, output_hidden_states=True, return_dict=True)
    # transformers 5 flattened CLIPTextModel (no .text_model); older versions and the SDXL encoders keep it.
    final_layer_norm = getattr(text_encoder, "text_model", text_encoder).final_layer_norm
    return final_layer_norm(out.hidden_states[-clip_skip])


def _device_of(module: Any) -> torch.device:
    return next(module.parameters()).device


def _load_diffusers_folder(path: str):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    try:
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", local_files_only=True,
                                                    torch_dtype=torch.float32)
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", local_files_only=True, torch_dtype=torch.float32)
        text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", local_files_only=True,
                                                     dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise ModelPathError(f"Cannot load the diffusers model in {path}: {exc}",
                             "The folder needs unet/, vae/ and text_encoder/ with their weights.") from exc
    return unet, vae, text_encoder
