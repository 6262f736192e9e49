"""Placing a tab's generated fields: the basic section as a grid, other sections in accordions."""

from __future__ import annotations

import gradio as gr

from lora_gui import i18n
from lora_gui.form import sections_for_tab
from lora_gui.page import Page


def render_sections(page: Page, tab: str, *, open_sections: tuple[str, ...] = ("basic",)) -> None:
    for section, specs in sections_for_tab(tab):
        if section == "basic":
            page.field_grid(specs)
            continue
        title = lambda lang, s=section: i18n.section_title(tab, s, lang)  # noqa: E731
        with page.text(gr.Accordion(title(page.lang), open=section in open_sections,
                                    elem_id=f"section-{tab}-{section}"), label=title):
            page.field_grid(specs)


def tab_intro(page: Page, key: str) -> gr.Markdown:
    return page.text(gr.Markdown(page.t(key), elem_classes=["lg-intro"]), value=key)
