"""HTML for the Utilities tab: a tool run's progress, its result summary and the per-module report.

The report is the tool's own JSON (`ToolReport.to_dict()` / `InspectReport.to_dict()`, see
docs/TOOLS.md); `report_rows` / `inspect_rows` turn it into table rows, the render functions into HTML.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from lora_gui import i18n
from lora_gui.panel_view import esc, format_size
from lora_gui.tool_args import Problem
from lora_gui.tools_runner import ToolResult

t = i18n.t
REPORT_COLUMNS = ("col_module", "col_kind", "col_rank", "col_alpha", "col_fro", "col_sum", "col_ratio", "col_error",
                  "col_note")
INSPECT_COLUMNS = ("col_module", "col_kind", "col_shape", "col_rank_only", "col_alpha", "col_dtype", "col_delta",
                   "col_flags")
TABLE_COLUMNS = REPORT_COLUMNS + INSPECT_COLUMNS  # catalog keys tools.<column>


# ---- rows ------------------------------------------------------------------------------------------
@dataclass
class ReportRow:
    """One module of a resize / merge / svd_merge / extract report."""

    module: str
    kind: str
    rank_in: int
    rank: int
    alpha: float
    fro_kept: Optional[float]
    sum_kept: Optional[float]
    max_ratio: Optional[float]  # σ₀ / σ_last kept; inf when the kept tail is zero
    rel_error: Optional[float]
    note: str


@dataclass
class InspectRow:
    module: str
    kind: str
    shape: str
    rank: int
    alpha: float
    dtype: str
    delta_norm: Optional[float]
    flags: list[str]


def _float(value: Any) -> Optional[float]:
    """A report number; the JSON writes inf/NaN as strings."""
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def report_rows(report: dict[str, Any]) -> list[ReportRow]:
    rows = []
    for m in report.get("modules") or []:
        rows.append(ReportRow(module=str(m.get("name", "")), kind=str(m.get("kind", "")),
                              rank_in=int(m.get("rank_in") or 0), rank=int(m.get("rank") or 0),
                              alpha=_float(m.get("alpha")) or 0.0, fro_kept=_float(m.get("fro_retained")),
                              sum_kept=_float(m.get("sum_s_retained")), max_ratio=_float(m.get("max_ratio")),
                              rel_error=_float(m.get("rel_error")), note=str(m.get("note") or "")))
    return rows


def inspect_rows(report: dict[str, Any]) -> list[InspectRow]:
    rows = []
    for m in report.get("modules") or []:
        shape = f"{m.get('out_features')}×{m.get('in_features')}"
        if m.get("kernel"):
            shape += "×" + "×".join(str(k) for k in m["kernel"])
        flags = [name for name, on in (("ZERO_UP", m.get("zero_up")), ("NAN/INF", m.get("nonfinite"))) if on]
        rows.append(InspectRow(module=str(m.get("name", "")), kind=str(m.get("kind", "")), shape=shape,
                               rank=int(m.get("rank") or 0), alpha=_float(m.get("alpha")) or 0.0,
                               dtype=str(m.get("dtype", "")), delta_norm=_float(m.get("delta_norm")), flags=flags))
    return rows


# ---- formatting ---------------------------------------------------------------------------------------
def pct(value: Optional[float]) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value * 100:.1f} %"


def num(value: Optional[float], digits: int = 4) -> str:
    if value is None or math.isnan(value):
        return "—"
    if math.isinf(value):
        return "∞"
    return f"{value:.{digits}g}"


def sci(value: Optional[float]) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.2e}"


def _ranks(ranks: dict[str, Any], lang: str) -> str:
    return t("issue.list_separator", lang).join(t("tools.rank_count", lang, rank=r, count=n) for r, n in ranks.items())


def render_message(level: str, text: str, code: str = "") -> str:
    icon = {"ok": "✔", "warning": "⚠", "error": "✖", "info": "ℹ"}[level]
    data = f' data-code="{esc(code)}"' if code else ""
    return f'<div class="lg-tool-msg lg-tool-{level}"{data}>{icon} {esc(text)}</div>'


# ---- states of a run -------------------------------------------------------------------------------
def render_problems(problems: list[Problem], lang: str) -> str:
    count = len(problems)
    return render_message("error", t("tools.not_started", lang, count=count), "not_started")


def render_busy(tool: str, elapsed: float, lang: str) -> str:
    return render_message("error", t("tools.busy", lang, tool=t(f"tools.{tool}", lang), seconds=int(elapsed)), "busy")


def render_running(result: Optional[ToolResult], tool: str, lang: str) -> str:
    """A progress bar with module counts once the tool reports them (loading comes first)."""
    elapsed = result.elapsed if result is not None else 0.0
    progress = result.progress if result is not None else None
    if progress and progress[1]:
        done, total = progress
        pct_done = int(done * 100 / total)
        text = t("tools.progress", lang, done=done, total=total, seconds=int(elapsed))
    else:
        pct_done = 0
        text = t("tools.loading", lang, seconds=int(elapsed))
    busy = "" if progress else " lg-tool-indeterminate"
    return (f'<div class="lg-tool-run" data-state="running"><div class="lg-progress running{busy}" '
            f'role="progressbar" aria-valuemin="0" aria-valuemax="100" aria-valuenow="{pct_done}">'
            f'<div class="lg-progress-fill" style="width:{pct_done}%"></div>'
            f'<span class="lg-progress-text">{pct_done} %</span></div>'
            f'<div class="lg-progress-stats">{esc(t(f"tools.{tool}", lang))} · {esc(text)}</div></div>')


def render_result(result: ToolResult, lang: str, *, table: bool) -> str:
    """The finished run: an error, or the summary (+ the per-module table when `table`)."""
    if result.error:
        return (f'<div class="lg-tool-run" data-state="failed">'
                f'{render_message("error", t("tools.failed", lang, message=result.error), "tool_error")}</div>')
    if not result.ok:
        text = t("tools.crashed", lang, code=result.exit_code, line=result.crash or "—")
        return (f'<div class="lg-tool-run" data-state="failed">{render_message("error", text, "tool_crash")}'
                f'<div class="lg-tool-hint">→ {esc(t("tools.crashed_hint", lang))}</div></div>')
    assert result.report is not None
    if result.tool == "inspect":
        body = render_inspect(result.report, lang)
    else:
        body = render_summary(result.report, lang, result.save_to, result.elapsed)
        if table:
            body += render_table(report_rows(result.report), lang)
    return f'<div class="lg-tool-run" data-state="done">{body}</div>'


def render_summary(report: dict[str, Any], lang: str, save_to: Optional[str] = None,
                   elapsed: Optional[float] = None) -> str:
    """`elapsed`: the run's wall time (starting Python and reading the files included)."""
    summary = report.get("summary") or {}
    parts = []
    output = report.get("output") or save_to
    if output:
        size = os.path.getsize(output) if os.path.isfile(output) else 0
        seconds = elapsed if elapsed is not None else _float(report.get("elapsed_s")) or 0.0
        text = t("tools.saved", lang, file=str(output), size=format_size(size) if size else "—", seconds=f"{seconds:.1f}")
        parts.append(render_message("ok", text, "saved"))
    lines = []
    if summary.get("modules"):
        ranks = _ranks(summary.get("ranks") or {}, lang)
        lines.append(t("tools.sum_modules", lang, count=summary["modules"], ranks=ranks))
    if _float(summary.get("mean_fro_retained")) is not None:
        lines.append(t("tools.sum_fro", lang, mean=pct(_float(summary["mean_fro_retained"])),
                       std=pct(_float(summary.get("std_fro_retained"))),
                       worst=pct(_float(summary.get("min_fro_retained")))))
    if _float(summary.get("max_rel_error")) is not None:
        lines.append(t("tools.sum_rel_error", lang, value=sci(_float(summary["max_rel_error"]))))
    lines += [str(x) for x in report.get("info") or []]  # the tool's own lines (English)
    if lines:
        parts.append('<ul class="lg-tool-summary">' + "".join(f"<li>{esc(x)}</li>" for x in lines) + "</ul>")
    for warning in report.get("warnings") or []:
        parts.append(render_message("warning", str(warning)))
    skipped = report.get("skipped") or []
    if skipped:
        items = "".join(f"<li>{esc(s)}</li>" for s in skipped)
        parts.append(f'<details class="lg-tool-skipped"><summary>{esc(t("tools.skipped", lang, count=len(skipped)))}'
                     f'</summary><ul>{items}</ul></details>')
    return "".join(parts)


def render_table(rows: list[ReportRow], lang: str) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{esc(t('tools.' + h, lang))}</th>" for h in REPORT_COLUMNS)
    body = []
    for r in rows:
        body.append(f'<tr data-module="{esc(r.module)}"><td class="name">{esc(r.module)}</td><td>{esc(r.kind)}</td>'
                    f'<td class="num">{r.rank_in} → {r.rank}</td><td class="num">{esc(num(r.alpha))}</td>'
                    f'<td class="num">{esc(pct(r.fro_kept))}</td><td class="num">{esc(pct(r.sum_kept))}</td>'
                    f'<td class="num">{esc(num(r.max_ratio, 3))}</td><td class="num">{esc(sci(r.rel_error))}</td>'
                    f'<td>{esc(r.note)}</td></tr>')
    return (f'<div class="lg-report-title">{esc(t("tools.report_title", lang, count=len(rows)))}</div>'
            f'<div class="lg-report-scroll"><table class="lg-report-table" data-rows="{len(rows)}"><thead><tr>{head}'
            f'</tr></thead><tbody>{"".join(body)}</tbody></table></div>')


def render_inspect(report: dict[str, Any], lang: str) -> str:
    summary = report.get("summary") or {}
    rows = inspect_rows(report)
    sep = t("issue.list_separator", lang)

    def counts(d: dict[str, Any]) -> str:
        return sep.join(f"{k} × {v}" for k, v in (d or {}).items()) or "—"

    lines = [t("tools.inspect_file", lang, file=str(report.get("path") or "")),
             t("tools.inspect_modules", lang, count=summary.get("modules", 0), parts=counts(summary.get("by_prefix"))),
             t("tools.inspect_kinds", lang, kinds=counts(summary.get("by_kind")),
               ranks=_ranks(summary.get("ranks") or {}, lang), alphas=counts(summary.get("alphas")),
               dtypes=counts(summary.get("dtypes")))]
    parts = ['<ul class="lg-tool-summary">' + "".join(f"<li>{esc(x)}</li>" for x in lines) + "</ul>"]
    problems = report.get("problems") or []
    if problems:
        parts.append(render_message("warning", t("tools.inspect_problems", lang, count=len(problems)), "problems"))
        parts.append('<ul class="lg-tool-problems">' + "".join(f"<li>{esc(p)}</li>" for p in problems) + "</ul>")
    else:
        parts.append(render_message("ok", t("tools.inspect_no_problems", lang), "no_problems"))
    metadata = report.get("metadata") or {}
    if metadata:
        items = "".join(f'<tr><td class="name">{esc(k)}</td><td class="value">{esc(_shorten(str(v)))}</td></tr>'
                        for k, v in sorted(metadata.items()))
        parts.append(f'<details class="lg-tool-metadata"><summary>{esc(t("tools.metadata", lang, count=len(metadata)))}'
                     f'</summary><div class="lg-report-scroll"><table class="lg-report-table">{items}</table></div>'
                     f'</details>')
    if rows:
        head = "".join(f"<th>{esc(t('tools.' + h, lang))}</th>" for h in INSPECT_COLUMNS)
        body = "".join(
            f'<tr data-module="{esc(r.module)}"><td class="name">{esc(r.module)}</td><td>{esc(r.kind)}</td>'
            f'<td class="num">{esc(r.shape)}</td><td class="num">{r.rank}</td><td class="num">{esc(num(r.alpha))}</td>'
            f'<td>{esc(r.dtype)}</td><td class="num">{esc(sci(r.delta_norm))}</td>'
            f'<td>{esc(" ".join(r.flags))}</td></tr>'
            for r in rows)
        parts.append(f'<div class="lg-report-title">{esc(t("tools.report_title", lang, count=len(rows)))}</div>'
                     f'<div class="lg-report-scroll"><table class="lg-report-table" data-rows="{len(rows)}"><thead><tr>'
                     f'{head}</tr></thead><tbody>{body}</tbody></table></div>')
    return "".join(parts)


def _shorten(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def problem_html(problems: list[Problem], lang: str) -> str:
    """The message(s) under one field."""
    return "".join(f'<div class="lg-issue lg-issue-error" data-code="{esc(p.key.split(".")[-1])}">✖ '
                   f'{esc(t(p.key, lang, **p.params))}</div>' for p in problems)


def model_note(path: str, lang: str) -> str:
    """The detected family of a base-model path (as on the Source model tab); '' when unknown."""
    from lora_gui.engine import detect_model
    from lora_gui.tabs.source_model import detection_note

    text = path.strip()
    if not text or not Path(text).exists():
        return ""
    return detection_note(detect_model(text), lang)
