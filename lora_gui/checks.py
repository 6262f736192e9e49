"""Checking the form: config errors, the pre-flight's findings, and where the page shows them.

The findings are the engine's own (trainer.findings.Finding), their message put in the page's language.
Every finding is shown next to its field (a small message slot under each component) and, for
findings of fields on other tabs, in the list above the Start button.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Optional

import gradio as gr

from lora_gui import engine, i18n
from lora_gui.engine import DatasetSummary
from lora_gui.form import FIELDS, SPEC, build_config, values_to_dict
from lora_gui.panel_view import esc
from trainer.config import ConfigError, FieldError, TrainConfig
from trainer.findings import Finding, error, errors_of


@dataclass
class FormCheck:
    config: Optional[TrainConfig]
    issues: list[Finding] = field(default_factory=list)  # messages in the page's language
    summary: Optional[DatasetSummary] = None

    @property
    def errors(self) -> list[Finding]:
        return errors_of(self.issues)

    @property
    def ok(self) -> bool:
        return self.config is not None and not self.errors

    def codes(self) -> set[str]:
        return {i.code for i in self.issues}


def check_form(values: list[Any] | tuple[Any, ...], lang: str, *, with_summary: bool = False) -> FormCheck:
    """Build the config and run validate(); the folder scan is shared with the dataset summary."""
    cfg, field_errors = build_config(values)
    if cfg is None:
        issues = [error(e.field, "bad_value",
                        i18n.t("issue.bad_value", lang, label=i18n.field_label(e.field, lang), message=e.message))
                  for e in field_errors]
        summary = engine.dataset_summary(lenient_config(values, field_errors)) if with_summary else None
        return FormCheck(None, issues, summary)
    scan = engine.scan_folders(cfg)
    issues = [replace(found, field=found.field or "",
                      message=i18n.issue_text(found.code, found.message, found.params, lang))
              for found in engine.validate(cfg, scan)]
    summary = engine.dataset_summary(cfg, scan) if with_summary else None
    return FormCheck(cfg, issues, summary)


def lenient_config(values: list[Any] | tuple[Any, ...], errors: list[FieldError]) -> TrainConfig:
    """The form as a config where fields with bad values keep their defaults (for the dataset preview)."""
    bad = {e.field for e in errors}
    data = {k: v for k, v in values_to_dict(values).items() if k not in bad}
    try:
        return TrainConfig.from_dict(data)
    except ConfigError:
        return TrainConfig(train_data_dir=str(data.get("train_data_dir", "")))


def render_slot(issues: list[Finding]) -> str:
    lines = []
    for issue in sorted(issues, key=lambda i: i.level != "error"):
        icon = "✖" if issue.level == "error" else "⚠"
        lines.append(f'<div class="lg-issue lg-issue-{issue.level}" data-code="{esc(issue.code)}">'
                     f'<span class="lg-issue-icon">{icon}</span> {esc(issue.message)}</div>')
    return "".join(lines)


def slot_updates(check: FormCheck, notes: Optional[dict[str, str]] = None) -> list[dict[str, Any]]:
    """One update per field (FIELDS order) for the message slot under it; `notes` adds info lines."""
    notes = notes or {}
    by_field: dict[str, list[Finding]] = {}
    for issue in check.issues:
        by_field.setdefault(issue.field, []).append(issue)
    updates = []
    for spec in FIELDS:
        html = render_slot(by_field.get(spec.name, [])) + notes.get(spec.name, "")
        updates.append(gr.update(value=html, visible=bool(html)))
    return updates


def render_overview(check: FormCheck, lang: str) -> str:
    """All findings, each with its tab and field, shown above Start."""
    if not check.issues:
        return ""
    errors = len(check.errors)
    warnings = len(check.issues) - errors
    head = i18n.t("issues.summary", lang, errors=errors, warnings=warnings)
    items = []
    for issue in sorted(check.issues, key=lambda i: i.level != "error"):
        where, target = "", ""
        if issue.field in SPEC:
            tab = SPEC[issue.field].tab
            # page.js: clicking the tab › field link shows that tab and scrolls to the field
            where = (f'<a class="lg-where" href="#field-{esc(issue.field)}" title="{esc(i18n.t("issues.go_to", lang))}">'
                     f'{esc(i18n.t("tab." + tab, lang))} › {esc(i18n.field_label(issue.field, lang))}</a> ')
            target = f' data-field="{esc(issue.field)}" data-tab="{esc(tab)}"'
        icon = "✖" if issue.level == "error" else "⚠"
        items.append(f'<li class="lg-ov-{issue.level}" data-code="{esc(issue.code)}"{target}>{icon} {where}'
                     f'{esc(issue.message)}</li>')
    cls = "has-errors" if errors else "warnings-only"
    # folded to one line (the count and the first problem) so the bar stays small; page.js keeps it open
    # across redraws once the user opened it
    first = items[0].replace("<li ", '<span class="lg-ov-first" ', 1)[:-len("</li>")] + "</span>"
    return (f'<div class="lg-overview {cls}"><details class="lg-problems"><summary><span class="lg-overview-head">'
            f'{esc(head)}</span>{first}</summary><ul>{"".join(items)}</ul></details></div>')
