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
        # the title (with how many settings inside were changed) is set by every form check
        with gr.Accordion(i18n.section_title(tab, section, page.lang), open=section in open_sections,
                          elem_id=f"section-{tab}-{section}", elem_classes=["lg-section"]) as accordion:
            page.field_grid(specs)
        page.sections[f"{tab}.{section}"] = (accordion, tab, section, [s.name for s in specs])


def tab_intro(page: Page, key: str) -> gr.Markdown:
    return page.text(gr.Markdown(page.t(key), elem_classes=["lg-intro"]), value=key)


def render_groups(page: Page, tab: str, groups: tuple[tuple[str, tuple[str, ...]], ...]) -> None:
    """The tab's basic fields under small headings (groups: (title key, field names)); fields no
    group names (a parameter added later) follow in a last grid, so nothing is ever left out."""
    basic = dict(sections_for_tab(tab)).get("basic", [])
    by_name = {s.name: s for s in basic}
    placed: set[str] = set()
    for key, names in groups:
        specs = [by_name[n] for n in names if n in by_name]
        if not specs:
            continue
        html = lambda lang, k=key: f'<div class="lg-group-title">{i18n.t(k, lang)}</div>'  # noqa: E731
        page.text(gr.HTML(html(page.lang), elem_classes=["lg-group-head"]), value=html)
        page.field_grid(specs)
        placed |= {s.name for s in specs}
    rest = [s for s in basic if s.name not in placed]
    if rest:
        page.field_grid(rest)
    for section, specs in sections_for_tab(tab):
        if section != "basic":
            raise ValueError(f"render_groups: tab {tab} also has section {section}; use render_sections")
