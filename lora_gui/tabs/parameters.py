"""Parameters tab: the basic training settings (batch, epochs, optimizer, learning rates, network)."""

from __future__ import annotations

from lora_gui.page import Page
from lora_gui.tabs.common import render_groups, tab_intro

# Headings for the tab's many fields; a field not listed here still appears (after the groups).
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("group.length", ("train_batch_size", "max_train_epochs", "max_train_steps", "save_every_n_epochs", "seed",
                      "caption_extension")),
    ("group.precision", ("mixed_precision", "cache_latents", "cache_latents_to_disk")),
    ("group.optimizer", ("optimizer_type", "optimizer_args", "lr_scheduler", "learning_rate", "unet_lr",
                         "text_encoder_lr", "lr_warmup_steps", "lr_scheduler_num_cycles", "lr_scheduler_power",
                         "max_grad_norm")),
    ("group.resolution", ("resolution", "enable_bucket", "min_bucket_reso", "max_bucket_reso")),
    ("group.network", ("lora_type", "network_dim", "network_alpha", "conv_dim", "conv_alpha", "network_weights")),
)


def build(page: Page) -> None:
    tab_intro(page, "intro.parameters")
    render_groups(page, "parameters", GROUPS)
