"""Pre-flight rules of the latent and text-encoder output caches."""

from __future__ import annotations

from typing import Iterator

from trainer.config import TrainConfig
from trainer.data.latent_cache import caching_blockers
from trainer.findings import Finding
from trainer.params import field_of
from trainer.preflight.registry import ERROR, WARNING, Context, issue, rule, trains_text_encoder


@rule("cache_latents_disabled")
def latent_caching(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    augs = [(name, field_of(TrainConfig, name).metadata["label"].lower()) for name in caching_blockers(cfg)]
    if (cfg.cache_latents or cfg.cache_latents_to_disk) and augs:
        yield issue("cache_latents", WARNING, "cache_latents_disabled",
                    f"Latents will not be cached because {' and '.join(label for _, label in augs)} change(s) the "
                    "image every epoch; the VAE encodes every batch instead (slower). Turn the augmentation off to "
                    "use the cache.", augmentation_fields=[name for name, _ in augs])


@rule("te_cache_with_te_training", "te_cache_caption_changes")
def text_encoder_cache(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    if not (cfg.cache_text_encoder_outputs or cfg.cache_text_encoder_outputs_to_disk):
        return
    field = "cache_text_encoder_outputs"
    if trains_text_encoder(cfg, ctx.family):
        yield issue(field, ERROR, "te_cache_with_te_training",
                    "Text-encoder outputs cannot be cached while the text encoder is trained: its outputs "
                    "change every step. Turn on 'Train UNet only' (or set the text-encoder learning rate to 0), "
                    "or turn caching off.")
    changes = [(name, label) for on, name, label in (
        (cfg.shuffle_caption, "shuffle_caption", "shuffle caption"),
        (cfg.caption_dropout_rate > 0, "caption_dropout_rate", "caption dropout"),
        (cfg.caption_dropout_every_n_epochs > 0, "caption_dropout_every_n_epochs", "dropout caption every n epochs"),
    ) if on]
    if changes:
        yield issue(field, ERROR, "te_cache_caption_changes",
                    f"Text-encoder outputs cannot be cached with {' and '.join(label for _, label in changes)}: the "
                    "captions change during training, so each image's outputs are not fixed. Turn those off, or "
                    "turn caching off.", caption_fields=[name for name, _ in changes])
