"""Samples tab: sample images generated while training."""

from __future__ import annotations

from lora_gui.page import Page
from lora_gui.tabs.common import render_sections, tab_intro


def build(page: Page) -> None:
    tab_intro(page, "intro.samples")
    render_sections(page, "samples")
