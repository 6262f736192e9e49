"""The page's component registry: parameter fields, their message slots, and translatable text.

Tab modules create components and register them here; the language switch and the form
checks then work on every registered component without knowing the tabs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Union

import gradio as gr

from lora_gui import i18n
from lora_gui.family import field_shown
from lora_gui.form import FIELDS, FieldSpec, elem_id, make_component, relabel

TextSource = Union[str, Callable[[str], Any]]  # a catalog key, or lang -> value


@dataclass
class Page:
    lang: str
    values: dict[str, Any]  # initial field values
    fields: dict[str, gr.components.Component] = field(default_factory=dict)
    slots: dict[str, gr.HTML] = field(default_factory=dict)
    texts: list[tuple[Any, dict[str, TextSource]]] = field(default_factory=list)
    parts: dict[str, Any] = field(default_factory=dict)  # named widgets other modules wire up
    extras: dict[str, Callable[[], None]] = field(default_factory=dict)  # field -> builds widgets under it
    cells: dict[str, gr.Column] = field(default_factory=dict)  # field -> its grid cell (hidden with the field)
    sections: dict[str, tuple] = field(default_factory=dict)  # "tab.section" -> (accordion, tab, section, fields)
    family: str = ""  # the initial model's family ("" = unknown): decides which fields are shown
    pickers: list[tuple[Any, Any, tuple]] = field(default_factory=list)  # (Browse button, path box, accept)

    # ---- parameter fields ------------------------------------------------------------------
    def field_component(self, spec: FieldSpec) -> gr.components.Component:
        """The component of one parameter, with its message slot under it, inside a grid cell."""
        if spec.name in self.fields:
            raise ValueError(f"field {spec.name} is placed twice")
        classes = ["lg-cell", f"lg-kind-{spec.kind.__name__}"] + (["lg-wide"] if spec.wide else [])
        with gr.Column(min_width=0, elem_classes=classes, elem_id=f"cell-{spec.name}",
                       visible=field_shown(spec.name, self.family)) as cell:
            value = self.values.get(spec.name, spec.default)
            if spec.widget == "path":
                comp = self.path_box(lambda: make_component(spec, value, self.lang), spec.accept)
            else:
                comp = make_component(spec, value, self.lang)
            slot = gr.HTML("", visible=False, elem_classes=["lg-slot"], elem_id=elem_id(spec.name) + "-issues")
            if spec.name in self.extras:
                self.extras[spec.name]()
        self.fields[spec.name] = comp
        self.slots[spec.name] = slot
        self.cells[spec.name] = cell
        return comp

    # ---- path fields: a Browse button opens the file picker (lora_gui/tabs/picker.py) ------------
    def path_box(self, make: Callable[[], Any], accept: tuple) -> Any:
        """The text box `make()` creates, with a Browse button beside it. `accept`: what the picker
        offers (trainer.params: FOLDER and/or file suffixes)."""
        with gr.Row(elem_classes=["lg-path-row"], equal_height=False):
            box = make()
            self.browse_button(box, accept)
        return box

    def browse_button(self, box: Any, accept: tuple) -> Any:
        button = self.text(gr.Button(self.t("picker.browse"), size="sm", scale=0, min_width=96,
                                     elem_classes=["lg-browse"], elem_id=f"{box.elem_id}-browse"),
                           value="picker.browse")
        self.pickers.append((button, box, tuple(accept)))
        return button

    def field_grid(self, specs: list[FieldSpec]) -> None:
        with gr.Row(elem_classes=["lg-grid"]):
            for spec in specs:
                self.field_component(spec)

    def ordered_fields(self) -> list[gr.components.Component]:
        """Field components in FIELDS order (the order form.values_to_dict expects)."""
        missing = [s.name for s in FIELDS if s.name not in self.fields]
        if missing:
            raise ValueError(f"fields not placed on any tab: {missing}")
        return [self.fields[s.name] for s in FIELDS]

    def ordered_slots(self) -> list[gr.HTML]:
        return [self.slots[s.name] for s in FIELDS]

    # ---- translatable text -----------------------------------------------------------------
    def text(self, component: Any, **props: TextSource) -> Any:
        """Register component props (label, info, value, placeholder, choices) shown in the page language."""
        self.texts.append((component, props))
        return component

    def t(self, key: str, **params: Any) -> str:
        return i18n.t(key, self.lang, **params)

    def text_components(self) -> list[Any]:
        return [c for c, _ in self.texts]

    @staticmethod
    def text_updates(texts: list[tuple[Any, dict[str, TextSource]]], lang: str) -> list[dict[str, Any]]:
        updates = []
        for _, props in texts:
            resolved = {k: (v(lang) if callable(v) else i18n.t(v, lang)) for k, v in props.items()}
            updates.append(gr.update(**resolved))
        return updates

    @staticmethod
    def field_label_updates(lang: str) -> list[dict[str, Any]]:
        return [relabel(spec, lang) for spec in FIELDS]
