"""Stable Diffusion XL: a UNet with size/crop conditioning, two text encoders, a KL VAE scaled by 0.13025.

Conditioning follows sd-scripts' SDXL text encoding (diffusers' SDXL pipeline agrees with it):
- CLIP ViT-L (`text_encoder`) and OpenCLIP ViT-bigG (`text_encoder_2`) each give their penultimate
  hidden states, without the final layer norm, concatenated along the features (768 + 1280 = 2048);
- the pooled, projected output of the second encoder (`text_embeds`, 1280) and six numbers per image
  (original height/width, crop top/left, target height/width, read from the batch) go to the UNet's
  `added_cond_kwargs`;
- clip_skip does not apply (validation warns); captions longer than 75 tokens are encoded in 75-token
  chunks as for SD1/SD2, and the pooled output comes from the first chunk.

LoRA files use kohya's SDXL names: UNet modules under their SGM names (`input_blocks` / `middle_block` /
`output_blocks`, as in the original checkpoint), the text encoders under `lora_te1_` and `lora_te2_`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import torch

from trainer.families.base import Components, LoraRoot
from trainer.families.ldm_layout import ldm_module_path
from trainer.families.model_info import ModelInfo, ModelPathError
from trainer.families.scheduler_config import folder_scheduler_config, training_scheduler_config
from trainer.families.sd import StableDiffusionFamily, _device_of
from trainer.families.single_file import load_sdxl_single_file_components, load_vae, read_checkpoint
from trainer.families.tokenizers import load_model_tokenizer

if TYPE_CHECKING:
    from diffusers import StableDiffusionXLPipeline

    from trainer.config import TrainConfig

# Components.extras key: which text encoders get LoRA modules (the two network_train_text_encoder_N switches).
LORA_TEXT_ENCODERS = "lora_text_encoders"


class SDXLFamily(StableDiffusionFamily):
    """SDXL base (and fine-tunes of it). Shares scheduler, attention and checkpointing code with SD1/SD2."""

    name = "sdxl"

    # ---- loading ---------------------------------------------------------------------------
    def load(self, cfg: "TrainConfig", info: ModelInfo) -> Components:
        """fp32 components on the CPU, frozen, with SDPA attention; cfg.vae replaces the VAE.

        A diffusers folder's tokenizer/ and tokenizer_2/ are used when it has them; otherwise (and for single
        files) the bundled CLIP BPE (the second pads with "!" like OpenCLIP).
        """
        if info.kind == "single_file":
            state_dict, configs = read_checkpoint(info.path)
            unet, vae, te1, te2 = load_sdxl_single_file_components(state_dict, configs, name=Path(info.path).name)
            del state_dict
            model_scheduler = (configs or {}).get("scheduler")
        else:
            unet, vae, te1, te2 = _load_sdxl_folder(info.path)
            model_scheduler = folder_scheduler_config(info.path)
        if getattr(cfg, "vae", ""):
            vae = load_vae(cfg.vae, vae.config)
        for model in (unet, vae, te1, te2):
            model.requires_grad_(False)

        from_folder = info.kind != "single_file"
        tokenizers = [load_model_tokenizer(info.path, subfolder, te, pad_token=pad, from_folder=from_folder)
                      for subfolder, te, pad in zip(("tokenizer", "tokenizer_2"), (te1, te2), self.traits.pad_tokens)]
        comp = Components(
            unet=unet,
            vae=vae,
            text_encoders=[te1, te2],
            tokenizers=tokenizers,
            scheduler_config=training_scheduler_config(self.name, model_scheduler,
                                                       v_parameterization=bool(info.v_parameterization)),
            info=info,
            extras={LORA_TEXT_ENCODERS: tuple(bool(getattr(cfg, switch, True))
                                              for switch in self.traits.text_encoder_switches)},
        )
        self.enable_sdpa(comp)
        return comp

    # ---- text conditioning -----------------------------------------------------------------
    def encode_prompts(self, comp: Components, captions: list[str], *, clip_skip: int = 1,
                       max_token_length: int = 75) -> dict[str, torch.Tensor]:
        """{"encoder_hidden_states": (batch, 77 | 152 | 227, w1 + w2), "text_embeds": (batch, projection)}.

        clip_skip is ignored: SDXL was trained on the penultimate layers already (sd-scripts does the same).
        """
        hidden, pooled = [], None
        for index, text_encoder in enumerate(comp.text_encoders):
            # StableDiffusionFamily.tokenize reads comp.tokenizer: hand it a view holding this encoder's tokenizer.
            ids = self.tokenize(replace(comp, tokenizers=[comp.tokenizers[index]]), captions,
                                max_token_length=max_token_length)
            batch, n_chunks, chunk_len = ids.shape
            out = text_encoder(ids.reshape(-1, chunk_len).to(_device_of(text_encoder)),
                               output_hidden_states=True, return_dict=True)
            states = out.hidden_states[-2].reshape(batch, n_chunks * chunk_len, -1)
            hidden.append(_join_chunks(states, n_chunks, chunk_len))
            if index == 1:
                pooled = out.text_embeds.reshape(batch, n_chunks, -1)[:, 0]
        device = hidden[0].device
        return {"encoder_hidden_states": torch.cat([h.to(device) for h in hidden], dim=-1),
                "text_embeds": pooled.to(device)}

    # ---- denoising -------------------------------------------------------------------------
    def predict(self, comp: Components, noisy_latents: torch.Tensor, timesteps: torch.Tensor, cond: dict,
                batch: Optional[dict] = None) -> torch.Tensor:
        # float32 even under fp16: sizes above 2048 are not exact in half precision.
        time_ids = self.time_ids(comp, batch, noisy_latents).to(noisy_latents.device)
        added = {"text_embeds": cond["text_embeds"], "time_ids": time_ids}
        return comp.unet(noisy_latents, timesteps, encoder_hidden_states=cond["encoder_hidden_states"],
                         added_cond_kwargs=added, return_dict=False)[0]

    @staticmethod
    def time_ids(comp: Components, batch: Optional[dict], latents: torch.Tensor) -> torch.Tensor:
        """(B, 6) float: original (h, w), crop (top, left), target (h, w), diffusers' and SGM's order.

        Without size information in the batch the image is taken as uncropped at the latents' size.
        """
        keys = ("original_sizes", "crop_top_lefts", "target_sizes")
        if batch is not None and all(batch.get(k) is not None for k in keys):
            return torch.cat([torch.as_tensor(batch[k]).reshape(-1, 2) for k in keys], dim=1).float()
        factor = 2 ** (len(comp.vae.config.block_out_channels) - 1)
        h, w = (int(s) * factor for s in latents.shape[-2:])
        return torch.tensor([[h, w, 0, 0, h, w]], dtype=torch.float32).repeat(latents.shape[0], 1)

    # ---- LoRA ------------------------------------------------------------------------------
    def lora_roots(self, comp: Components) -> list[LoraRoot]:
        """The UNet and the text encoders whose switch is on (both unless the config turned one off)."""
        enabled = comp.extras.get(LORA_TEXT_ENCODERS, (True, True))
        roots = [LoraRoot(self.traits.lora_prefixes[0], comp.unet, "unet")]
        for prefix, text_encoder, on in zip(self.traits.text_encoder_prefixes, comp.text_encoders, enabled):
            if on:
                roots.append(LoraRoot(prefix, text_encoder, "text_encoder"))
        return roots

    def kohya_module_name(self, root: LoraRoot, module_path: str) -> str:
        """UNet: the SGM module path ('down_blocks.1.attentions.0.proj_in' -> 'lora_unet_input_blocks_4_1_proj_in');
        text encoders: `lora_te1_text_model_...` / `lora_te2_text_model_...`."""
        if root.kind == "unet":
            return f"{root.prefix}_{ldm_module_path(module_path, root.module.config).replace('.', '_')}"
        return super().kohya_module_name(root, module_path)

    # ---- sampling --------------------------------------------------------------------------
    def sampling_pipeline(self, comp: Components, sampler: str) -> "StableDiffusionXLPipeline":
        from diffusers import StableDiffusionXLPipeline

        from trainer.sampling import make_sampler

        pipe = StableDiffusionXLPipeline(
            vae=comp.vae,
            text_encoder=comp.text_encoders[0],
            text_encoder_2=comp.text_encoders[1],
            tokenizer=comp.tokenizers[0],
            tokenizer_2=comp.tokenizers[1],
            unet=comp.unet,
            scheduler=make_sampler(sampler, comp.scheduler_config),
            add_watermarker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def sampling_kwargs(self, comp: Components, prompt: str, negative_prompt: str, *, clip_skip: int = 1,
                        max_token_length: int = 75) -> dict[str, Any]:
        # Encoded here, like in training (long prompts, the empty negative prompt encoded rather than zeros).
        pos = self.encode_prompts(comp, [prompt], max_token_length=max_token_length)
        neg = self.encode_prompts(comp, [negative_prompt or ""], max_token_length=max_token_length)
        return {
            "prompt_embeds": pos["encoder_hidden_states"],
            "pooled_prompt_embeds": pos["text_embeds"],
            "negative_prompt_embeds": neg["encoder_hidden_states"],
            "negative_pooled_prompt_embeds": neg["text_embeds"],
        }


def _join_chunks(hidden: torch.Tensor, n_chunks: int, chunk_len: int) -> torch.Tensor:
    """Chunked states (BOS, 75 tokens, EOS per chunk) -> BOS + each chunk's 75 tokens + the last token."""
    if n_chunks == 1:
        return hidden
    body = chunk_len - 2
    pieces = [hidden[:, :1]]
    pieces += [hidden[:, i:i + body] for i in range(1, n_chunks * chunk_len, chunk_len)]
    pieces.append(hidden[:, -1:])
    return torch.cat(pieces, dim=1)


def _load_sdxl_folder(path: str):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    try:
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", local_files_only=True,
                                                    torch_dtype=torch.float32)
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", local_files_only=True, torch_dtype=torch.float32)
        te1 = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", local_files_only=True,
                                            dtype=torch.float32)
        te2 = CLIPTextModelWithProjection.from_pretrained(path, subfolder="text_encoder_2", local_files_only=True,
                                                          dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise ModelPathError(f"Cannot load the SDXL model in {path}: {exc}",
                             "The folder needs unet/, vae/, text_encoder/ and text_encoder_2/ with their weights.") from exc
    return unet, vae, te1, te2
