"""Parameters tab: the basic training settings (batch, epochs, optimizer, learning rates, network)."""

from __future__ import annotations

from lora_gui.page import Page
from lora_gui.tabs.common import render_sections, tab_intro


def build(page: Page) -> None:
    tab_intro(page, "intro.parameters")
    render_sections(page, "parameters")
