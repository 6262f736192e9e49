"""Advanced tab: memory, augmentation, captions, noise and saving options."""

from __future__ import annotations

from lora_gui.page import Page
from lora_gui.tabs import resume
from lora_gui.tabs.common import render_sections, tab_intro


def build(page: Page) -> None:
    tab_intro(page, "intro.advanced")
    page.extras["resume"] = lambda: resume.build_widgets(page)
    render_sections(page, "advanced", open_sections=())
