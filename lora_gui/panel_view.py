"""HTML for the training panel: progress bar, loss chart (inline SVG), files, status."""

from __future__ import annotations

import html
import math
import re
from pathlib import Path
from typing import Optional

from lora_gui import i18n
from lora_gui.run_view import ViewState

t = i18n.t


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


# ---- progress --------------------------------------------------------------------------------
def render_progress(state: ViewState, lang: str) -> str:
    if state.status == "idle":
        return ""
    pct = int(math.floor(state.progress * 100))
    stats = [t("panel.step", lang, step=state.step, total=state.total_steps or "?")]
    if state.epochs and state.kind != "slider":  # a slider job's "epochs" are its trainings: the stage line says which
        stats.append(t("panel.epoch", lang, epoch=max(1, state.epoch) if state.step else state.epoch,
                       epochs=state.epochs))
    if state.sec_per_step:
        stats.append(speed_text(state, lang))
    busy = stage_busy(state)
    if state.active and state.step and state.eta_sec and not busy:  # the ETA counts training steps only
        stats.append(t("panel.eta", lang, value=format_duration(state.eta_sec)))
    if state.avg_loss is not None:
        stats.append(t("panel.avg_loss", lang, value=f"{state.avg_loss:.4f}"))
    if state.lr:
        stats.append(t("panel.lr", lang, value=f"{state.lr:.2e}"))
    if state.device:
        stats.append(t("panel.device", lang, value=state.device))
    bar_class = {"completed": "done", "failed": "failed", "stopped": "stopped"}.get(state.status, "running")
    fill, text = f"{pct}%", f"{pct} %"
    if busy:  # a merge / resize / preview stage: its own count when the engine logs one, else a moving bar
        part = stage_progress(state)
        bar_class += " lg-busy" if part else " lg-busy lg-indeterminate"
        fill, text = (f"{100 * part[0] // max(1, part[1])}%", f"{part[0]} / {part[1]} {part[2]}") if part else ("30%", "…")
    return (render_stage(state, lang) +
        f'<div class="lg-progress {bar_class}" role="progressbar" aria-valuemin="0" aria-valuemax="100" '
        f'aria-valuenow="{pct}" data-step="{state.step}" data-total="{state.total_steps}">'
        f'<div class="lg-progress-fill" style="width:{fill}"></div>'
        f'<span class="lg-progress-text">{esc(text)}</span></div>'
        f'<div class="lg-progress-stats">{" · ".join(esc(s) for s in stats)}</div>'
        + render_resources(state, lang)
    )


def render_resources(state: ViewState, lang: str) -> str:
    """RAM and CPU of the engine, and on a GPU its memory (allocated / reserved / total) and utilisation."""
    use = state.resources
    if not state.active or not use:
        return ""
    parts = [t("panel.ram", lang, value=f"{use.get('ram_gib', 0):.1f}")]
    if "vram_total_gib" in use:
        parts.append(t("panel.vram", lang, allocated=f"{use.get('vram_allocated_gib', 0):.1f}",
                       reserved=f"{use.get('vram_reserved_gib', 0):.1f}", total=f"{use['vram_total_gib']:.0f}"))
    if "gpu_percent" in use:
        parts.append(t("panel.gpu", lang, value=use["gpu_percent"]))
    elif "cpu_percent" in use:
        parts.append(t("panel.cpu", lang, value=use["cpu_percent"]))
    return f'<div class="lg-resources" id="resource-line">{" · ".join(esc(p) for p in parts)}</div>'


# the engine logs "stage 9/9: preview" when a stage begins, then "preview: 3/10 images" while it works
_STAGE_BEGIN = re.compile(r"^stage \d+/\d+: ")
_STAGE_COUNT = re.compile(r"^[\w ]+: (?P<done>\d+)/(?P<total>\d+) (?P<unit>\w+)$")


def stage_busy(state: ViewState) -> bool:
    """A stage without training steps is running (the step bar, full by then, says nothing about it)."""
    return bool(state.active and state.stage and not state.stage.get("steps"))


def stage_progress(state: ViewState) -> Optional[tuple[int, int, str]]:
    """(done, total, unit) the current stage last logged, or None."""
    for _level, text in reversed(state.messages):
        if _STAGE_BEGIN.match(text):
            return None
        match = _STAGE_COUNT.match(text)
        if match:
            return int(match["done"]), int(match["total"]), match["unit"]
    return None


def breakable(name: str) -> str:
    """A file name (escaped) that may wrap after - _ . (<wbr>), so a narrow table never splits a word."""
    return re.sub(r"([-_.])", r"\1<wbr>", esc(name))


_SPEED_UNITS: dict[tuple[int, float], str] = {}  # (job id, start time) -> "s/it" or "it/s"


def speed_text(state: ViewState, lang: str) -> str:
    """The speed in one unit for the whole run (as kohya's progress bar): chosen from the first reading,
    so a speed near 1 step per second does not flip between it/s and s/it every second."""
    unit = _SPEED_UNITS.setdefault((state.job_id, state.started_at), "s/it" if state.sec_per_step >= 1 else "it/s")
    if unit == "s/it":
        return t("panel.sec_per_it", lang, value=f"{state.sec_per_step:.2f}")
    return t("panel.it_per_sec", lang, value=f"{1 / state.sec_per_step:.2f}")


STAGE_SIDE = re.compile(r"^train (?P<pair>.+)/(?P<side>low|high)$")


def stage_text(state: ViewState, lang: str) -> str:
    """What the current stage of a multi-stage job is: "LoRA 2 of 6: front / high" for a training of a
    known plan, else "Stage 3 of 5: SVD merge". Empty for single-stage jobs (no `stage` events)."""
    stage = state.stage
    if not stage:
        return ""
    index, count, kind, name = stage.get("index") or 0, stage.get("count") or 0, stage.get("kind") or "", \
        str(stage.get("name") or "")
    if kind == "train":
        trainings = [s for s in state.stage_plan if s.get("kind") == "train"]
        planned = next((s for s in trainings if s.get("name") == name), None)
        match = STAGE_SIDE.match(name)
        pair = (planned or {}).get("pair") or (match.group("pair") if match else "")
        side = (planned or {}).get("side") or (match.group("side") if match else "")
        if pair and side:
            what = t("stage.pair_side", lang, pair=pair, side=t(f"stage.side_{side}", lang))
            if planned is not None:
                return t("stage.lora", lang, index=trainings.index(planned) + 1, count=len(trainings), what=what)
            return t("stage.generic", lang, index=index, count=count, name=t("stage.kind_train", lang) + " " + what)
    label = t(f"stage.kind_{kind}", lang) if i18n.has(f"stage.kind_{kind}", "en") else name
    return t("stage.generic", lang, index=index, count=count, name=label)


def render_stage(state: ViewState, lang: str) -> str:
    text = stage_text(state, lang)
    if not text or state.finished:
        return ""
    stage = state.stage or {}
    return (f'<div class="lg-stage" data-stage-index="{esc(stage.get("index"))}" '
            f'data-stage-count="{esc(stage.get("count"))}" data-stage-kind="{esc(stage.get("kind"))}">'
            f'▸ {esc(text)}</div>')


# ---- loss chart ------------------------------------------------------------------------------
def smooth(values: list[float], weight: float = 0.9) -> list[float]:
    """TensorBoard-style exponential moving average, debiased at the start."""
    out, last, norm = [], 0.0, 0.0
    for v in values:
        last = weight * last + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out.append(last / norm)
    return out


def _downsample(points: list[tuple[int, float]], limit: int = 600) -> list[tuple[int, float]]:
    if len(points) <= limit:
        return points
    stride = len(points) / limit
    return [points[int(i * stride)] for i in range(limit)] + [points[-1]]


def _nice_ticks(lo: float, hi: float, count: int = 4) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    first = math.ceil(lo / step) * step
    ticks, v = [], first
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 12))
        v += step
    return ticks


def render_loss_chart(state: ViewState, lang: str, width: int = 640, height: int = 260) -> str:
    points = [(s, v) for s, v in state.loss if math.isfinite(v)]
    if not points:
        return f'<div class="lg-chart-empty">{esc(t("panel.loss_waiting", lang))}</div>'
    smoothed = list(zip([p[0] for p in points], smooth([p[1] for p in points])))
    raw = _downsample(points)
    sm = _downsample(smoothed)
    left, right, top, bottom = 56, 12, 14, 34
    pw, ph = width - left - right, height - top - bottom
    x_lo = min(p[0] for p in points)
    x_hi = max(max(p[0] for p in points), state.total_steps or 0, x_lo + 1)
    values = [p[1] for p in points]
    y_lo, y_hi = min(values), max(values)
    if y_hi - y_lo < 1e-9:
        y_lo, y_hi = y_lo - 0.5 * abs(y_lo or 1), y_hi + 0.5 * abs(y_hi or 1)
    pad = (y_hi - y_lo) * 0.05
    y_lo, y_hi = y_lo - pad, y_hi + pad

    def sx(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * pw

    def sy(y: float) -> float:
        return top + (1 - (y - y_lo) / (y_hi - y_lo)) * ph

    def path(pts: list[tuple[int, float]]) -> str:
        return " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(pts))

    grid = []
    for y in _nice_ticks(y_lo, y_hi):
        grid.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" class="grid"/>'
                    f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:g}</text>')
    for x in _nice_ticks(x_lo, x_hi):
        if x_lo <= x <= x_hi:
            grid.append(f'<line y1="{top}" y2="{top + ph}" x1="{sx(x):.1f}" x2="{sx(x):.1f}" class="grid"/>'
                        f'<text x="{sx(x):.1f}" y="{top + ph + 16}" text-anchor="middle">{int(x)}</text>')
    last = points[-1]
    legend = (f'<g class="legend"><line x1="{left + 8}" x2="{left + 26}" y1="{top + 6}" y2="{top + 6}" class="raw"/>'
              f'<text x="{left + 30}" y="{top + 10}">{esc(t("panel.loss_raw", lang))}</text>'
              f'<line x1="{left + 118}" x2="{left + 136}" y1="{top + 6}" y2="{top + 6}" class="smooth"/>'
              f'<text x="{left + 140}" y="{top + 10}">{esc(t("panel.loss_smoothed", lang))}</text></g>')
    return (
        f'<svg class="lg-loss-chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{esc(t("panel.loss_chart", lang))}" data-points="{len(points)}">'
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="bg"/>{"".join(grid)}'
        f'<path d="{path(raw)}" class="raw"/><path d="{path(sm)}" class="smooth"/>'
        f'<circle cx="{sx(last[0]):.1f}" cy="{sy(smoothed[-1][1]):.1f}" r="3" class="dot"/>{legend}'
        f'<text x="{left + pw / 2:.0f}" y="{height - 4}" text-anchor="middle" class="axis">'
        f'{esc(t("panel.axis_step", lang))}</text></svg>'
    )


# ---- samples ---------------------------------------------------------------------------------
def gallery_items(state: ViewState, lang: str, limit: int = 60) -> list[tuple[str, str]]:
    items = []
    for s in state.samples[-limit:]:
        if Path(s.path).exists():
            caption = t("panel.sample_caption", lang, step=s.step, epoch=s.epoch, prompt=s.prompt)
            items.append((s.path, caption))
    return items


# ---- saved files -----------------------------------------------------------------------------
KIND_KEYS = {"epoch": "file.kind_epoch", "step": "file.kind_step", "final": "file.kind_final",
             "stopped": "file.kind_stopped", "state": "file.kind_state", "last": "file.kind_final",
             "intermediate": "file.kind_intermediate", "non_ema": "file.kind_non_ema"}


def _shown_name(path: str, output_dir: str) -> str:
    """The file name; a file in a subfolder of the output folder (a slider's work files) with that subfolder."""
    try:
        return Path(path).relative_to(output_dir).as_posix() if output_dir else Path(path).name
    except ValueError:
        return Path(path).name


def render_files(state: ViewState, lang: str) -> str:
    if not state.saved:
        if state.status == "idle":
            return ""
        return f'<div class="lg-files-empty">{esc(t("panel.no_files", lang))}</div>'
    rows = []
    for f in state.saved:
        name = _shown_name(f.path, state.output_dir)
        kind = t(KIND_KEYS[f.kind], lang) if f.kind in KIND_KEYS else f.kind
        size = format_size(f.size_bytes) if f.size_bytes else "—"
        where = t("file.at_step", lang, step=f.step) if f.step is not None else ""
        rows.append(f'<tr><td class="name" title="{esc(f.path)}">{breakable(name)}</td><td>{esc(kind)}</td>'
                    f'<td class="num">{esc(size)}</td><td>{esc(where)}</td></tr>')
    folder = esc(state.output_dir)
    return (f'<div class="lg-files"><div class="lg-files-folder">{esc(t("panel.files_in", lang))} '
            f'<code>{folder}</code></div><table><thead><tr><th>{esc(t("file.name", lang))}</th>'
            f'<th>{esc(t("file.kind", lang))}</th><th>{esc(t("file.size", lang))}</th>'
            f'<th>{esc(t("file.when", lang))}</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


# ---- status ----------------------------------------------------------------------------------
def _final_file(state: ViewState) -> Optional[str]:
    for f in reversed(state.saved):
        if f.kind not in ("state", "intermediate"):
            return f.path
    return None


def render_status(state: ViewState, lang: str, notice: str = "") -> str:
    """The one-line status card, with the engine's message and hint on failure."""
    parts: list[str] = []
    status = state.status
    icon = {"idle": "●", "starting": "◌", "running": "▶", "stopping": "■", "completed": "✔", "stopped": "■",
            "failed": "✖"}.get(status, "●")
    title = t(f"status.{status}", lang)
    detail = ""
    if status == "completed":
        final = _final_file(state)
        wall = (state.done or {}).get("wall_time_sec") or 0
        detail = t("status.completed_detail", lang, steps=state.step, time=format_duration(wall),
                   file=Path(final).name if final else "—")
    elif status == "stopped":
        final = _final_file(state)
        detail = t("status.stopped_detail", lang, step=state.step, file=Path(final).name if final else "—")
    elif status == "running":
        detail = t("status.running_detail", lang)
    elif status == "starting":
        detail = t("status.starting_detail", lang)
    elif status == "stopping":
        detail = t("status.stopping_detail", lang)
    elif status == "idle":
        detail = t("status.idle_detail", lang)
    parts.append(f'<div class="lg-status-line"><span class="lg-status-icon">{icon}</span>'
                 f'<span class="lg-status-title">{esc(title)}</span>'
                 f'<span class="lg-status-detail">{esc(detail)}</span></div>')
    if status == "failed":
        parts.append(render_errors(state, lang))
    elif state.warnings and state.active:
        last = state.warnings[-1]
        message, _hint = i18n.engine_event_text(last, lang)
        parts.append(f'<div class="lg-status-warning" data-code="{esc(last.get("code") or "")}">⚠ {esc(message)}</div>')
    if notice:
        parts.append(f'<div class="lg-status-notice">{notice}</div>')
    return (f'<div class="lg-status lg-status-{esc(status)}" data-status="{esc(status)}" data-job="{state.job_id}">'
            f'{"".join(parts)}</div>')


def render_errors(state: ViewState, lang: str) -> str:
    items = []
    for err in state.errors[-5:]:
        if err.get("code") == "engine_exit":
            message = t("status.engine_exit", lang, code=err.get("exit_code"))
            hint = t("status.engine_exit_hint", lang)
        elif err.get("code") == "engine_gone":
            message, hint = t("status.engine_gone", lang), t("status.engine_exit_hint", lang)
        else:
            message, hint = i18n.engine_event_text(err, lang)
            if err.get("field"):
                message = f'{i18n.field_label(err["field"], lang)}: {message}'
        items.append(f'<div class="lg-error" data-code="{esc(err.get("code") or "")}">'
                     f'<div class="lg-error-message">{esc(message)}</div>'
                     + (f'<div class="lg-error-hint">→ {esc(hint)}</div>' if hint else "") + "</div>")
    if not items:
        message = (state.done or {}).get("message") or t("status.failed", lang)
        items.append(f'<div class="lg-error"><div class="lg-error-message">{esc(message)}</div></div>')
    return "".join(items)
