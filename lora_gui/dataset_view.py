"""The live dataset summary under the folder fields: subsets, reg balancing, buckets, steps."""

from __future__ import annotations

from typing import Optional

from lora_gui import i18n
from lora_gui.engine import DatasetSummary
from lora_gui.panel_view import esc

t = i18n.t


def _pct(part: int, whole: int) -> str:
    return f"{round(100 * part / whole)} %" if whole else "—"


FILE_LIST_LIMIT = 50  # lines per list; the rest is counted


def _note_text(note: dict, lang: str) -> str:
    key = f"dataset.note_{note.get('code')}"
    return t(key, lang, **note.get("params", {})) if i18n.has(key, lang) else str(note.get("message", ""))


def _file_list(css: str, title: str, lines: list[tuple[str, str]], lang: str, *, open_: bool) -> str:
    items = "".join(f"<li><code>{esc(name)}</code>: {esc(text)}</li>" for name, text in lines[:FILE_LIST_LIMIT])
    if len(lines) > FILE_LIST_LIMIT:
        items += f'<li>{esc(t("dataset.more_files", lang, count=len(lines) - FILE_LIST_LIMIT))}</li>'
    return (f'<details class="lg-files {css}"{" open" if open_ else ""}><summary>{esc(title)}</summary>'
            f"<ul>{items}</ul></details>")


def _converted_and_skipped(summary: DatasetSummary, lang: str) -> list[str]:
    """The files loading converts (and how), and the files not trained on (and why)."""
    parts = []
    if summary.converted:
        lines = [(name, "; ".join(_note_text(n, lang) for n in notes)) for name, notes in summary.converted]
        parts.append(_file_list("lg-converted", t("dataset.converted", lang, count=len(lines)), lines, lang,
                                open_=len(lines) <= 6))
    if summary.skipped:
        lines = [(name, t(f"dataset.skip_{reason}", lang, detail=detail) if i18n.has(f"dataset.skip_{reason}", lang)
                  else message) for name, reason, detail, message in summary.skipped]
        parts.append(_file_list("lg-skipped warn", "⚠ " + t("dataset.skipped", lang, count=len(lines)), lines, lang,
                                open_=True))
    return parts


def render_summary(summary: Optional[DatasetSummary], lang: str, *, engine_ready: bool = True) -> str:
    if summary is None:
        key = "dataset.pick_folder" if engine_ready else "dataset.engine_missing"
        return f'<div class="lg-dataset lg-dataset-empty">{esc(t(key, lang))}</div>'
    parts: list[str] = [f'<div class="lg-dataset-title">{esc(t("dataset.title", lang))}</div>']
    if summary.error:
        parts.append(f'<div class="lg-issue lg-issue-error">✖ {esc(summary.error)}</div>')
    if summary.subsets:
        rows = []
        masked = any(s.masks is not None for s in summary.subsets)
        for s in summary.subsets:
            badge = (f'<span class="lg-badge reg">{esc(t("dataset.reg_badge", lang))}</span>' if s.is_reg
                     else f'<span class="lg-badge train">{esc(t("dataset.train_badge", lang))}</span>')
            coverage = f"{s.captioned}/{s.images} ({_pct(s.captioned, s.images)})"
            cov_cls = "ok" if s.images and s.captioned == s.images else ("none" if not s.captioned else "part")
            rows.append(
                f'<tr><td>{badge} <code>{esc(s.folder)}</code></td><td class="num">{s.repeats}</td>'
                f'<td>{esc(s.tokens)}</td><td class="num">{s.images}</td>'
                f'<td class="num cov-{cov_cls}">{esc(coverage)}</td>'
                + (f'<td class="num lg-masks">{s.masks or 0}/{s.images}</td>' if masked else "")
                + f'<td class="num">{s.repeats * s.images}</td></tr>')
        parts.append(
            f'<table class="lg-table"><thead><tr><th>{esc(t("dataset.col_folder", lang))}</th>'
            f'<th class="num">{esc(t("dataset.col_repeats", lang))}</th><th>{esc(t("dataset.col_tokens", lang))}</th>'
            f'<th class="num">{esc(t("dataset.col_images", lang))}</th><th class="num">{esc(t("dataset.col_captions", lang))}</th>'
            + (f'<th class="num">{esc(t("dataset.col_masks", lang))}</th>' if masked else "")
            + f'<th class="num">{esc(t("dataset.col_samples", lang))}</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')
        if any(not s.is_reg and s.captioned < s.images for s in summary.subsets):
            parts.append(f'<div class="lg-note">{esc(t("dataset.caption_fallback", lang, ext=summary.caption_extension or "—"))}</div>')
    elif not summary.error:
        parts.append(f'<div class="lg-note">{esc(t("dataset.no_subsets", lang))}</div>')
    parts += _converted_and_skipped(summary, lang)
    for name, reason in summary.ignored:
        parts.append(f'<div class="lg-note warn">⚠ {esc(t("dataset.ignored", lang, folder=name, reason=reason))}</div>')
    if summary.num_reg_images:
        parts.append(f'<div class="lg-note">{esc(t("dataset.reg_balance", lang, found=summary.num_reg_images, used=summary.num_reg_used, samples=summary.num_reg_samples, train=summary.num_train_samples))}</div>')
    if summary.buckets:
        rows = "".join(f'<tr><td>{b.width} × {b.height}</td><td class="num">{b.images}</td>'
                       f'<td class="num">{b.samples}</td><td class="num">{b.batches}</td></tr>' for b in summary.buckets)
        parts.append(
            f'<details class="lg-buckets"{" open" if len(summary.buckets) <= 6 else ""}><summary>'
            f'{esc(t("dataset.buckets", lang, count=len(summary.buckets)))}</summary><table class="lg-table">'
            f'<thead><tr><th>{esc(t("dataset.col_bucket", lang))}</th><th class="num">{esc(t("dataset.col_images", lang))}</th>'
            f'<th class="num">{esc(t("dataset.col_samples", lang))}</th><th class="num">{esc(t("dataset.col_batches", lang))}</th></tr>'
            f'</thead><tbody>{rows}</tbody></table></details>')
    if summary.steps_per_epoch:
        parts.append(
            '<div class="lg-steps">'
            f'<div><span>{esc(t("dataset.steps_per_epoch", lang))}</span><b>{summary.steps_per_epoch:,}</b></div>'
            f'<div><span>{esc(t("dataset.epochs", lang))}</span><b>{summary.epochs:,}</b></div>'
            f'<div class="total"><span>{esc(t("dataset.total_steps", lang))}</span><b data-total-steps="{summary.total_steps}">{summary.total_steps:,}</b></div>'
            '</div>'
            f'<div class="lg-note">{esc(t("dataset.steps_explain", lang, batches=summary.batches_per_epoch, batch=summary.batch_size, accum=summary.gradient_accumulation_steps))}'
            + (f' {esc(t("dataset.by_steps", lang))}' if summary.by_steps else "") + '</div>')
    return f'<div class="lg-dataset">{"".join(parts)}</div>'
