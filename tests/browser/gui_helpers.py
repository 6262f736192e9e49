"""Helpers for the browser tests: finding fields, reading the panel, waiting for the run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page

ROOT = Path(__file__).resolve().parents[2]


def engine_ready() -> bool:
    return (ROOT / "trainer" / "__main__.py").exists()


needs_engine = pytest.mark.skipif(not engine_ready(), reason="the training engine (trainer/__main__.py) has not landed")


def wait_ready(page: "Page") -> None:
    """The page has loaded, checked the form once, and drawn the panel."""
    page.wait_for_selector("#start-button")
    page.wait_for_selector("#run-status .lg-status", timeout=30_000)
    time.sleep(1.0)  # the load -> language -> form check chain


def _meta(field: str) -> dict:
    from trainer.config import iter_field_meta

    return next(meta for f, meta in iter_field_meta() if f.name == field)


def tab_of(field: str) -> str:
    return _meta(field)["tab"]


def show_field(page: "Page", field: str) -> None:
    """Show the field's tab, and open the section (accordion) that holds it when it is closed
    (Gradio creates an accordion's fields the first time it opens)."""
    tab, section = tab_of(field), _meta(field).get("section") or "basic"
    page.click(f"#tab-{tab}-button")
    if section != "basic":
        header = page.locator(f"#section-{tab}-{section} > .label-wrap")
        header.wait_for()
        if "open" not in (header.get_attribute("class") or "").split():
            header.click()
    page.wait_for_selector(f"#field-{field}")


def field_input(page: "Page", field: str):
    show_field(page, field)
    return page.locator(f"#field-{field}").locator("textarea, input").first


def set_field(page: "Page", field: str, value: object) -> None:
    box = field_input(page, field)
    box.fill(str(value))
    box.press("Tab")
    time.sleep(0.7)  # let the form check run


def get_field(page: "Page", field: str) -> str:
    return field_input(page, field).input_value()


def set_checkbox(page: "Page", field: str, checked: bool) -> None:
    show_field(page, field)
    page.locator(f"#field-{field} input[type=checkbox]").set_checked(checked)
    time.sleep(0.5)


def pick(page: "Page", elem_id: str, option: str) -> None:
    """Choose `option` in the gr.Dropdown with this elem_id."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()
    time.sleep(0.5)


def status(page: "Page") -> str:
    return page.get_attribute("#run-status .lg-status", "data-status") or ""


def job_id(page: "Page") -> int:
    return int(page.get_attribute("#run-status .lg-status", "data-job") or 0)


def start_run(page: "Page", button: str = "#start-button", timeout: float = 120) -> int:
    """Press Start and wait until the status shows the new job (the panel still shows the session's
    previous run, finished, until the first poll after the start)."""
    before = job_id(page) if page.locator("#run-status .lg-status").count() else 0
    page.click(button)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if page.locator("#run-status .lg-status").count() and job_id(page) > before:
            return job_id(page)
        time.sleep(0.3)
    raise AssertionError(f"no new job on the panel {timeout}s after pressing {button}: {page.inner_text('#run-status')}")


def wait_status(page: "Page", statuses: tuple[str, ...], timeout: float) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        current = status(page)
        if current in statuses:
            return current
        time.sleep(0.5)
    raise AssertionError(f"status is {status(page)!r}, expected one of {statuses} within {timeout}s")


def progress_step(page: "Page") -> int:
    bar = page.locator("#run-progress .lg-progress")
    if not bar.count():
        return 0
    return int(bar.first.get_attribute("data-step") or 0)


def wait_step(page: "Page", at_least: int, timeout: float) -> int:
    """Wait until the current run is training and has reached `at_least` steps (a finished earlier run
    on the panel does not count)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        step = progress_step(page)
        if step >= at_least and status(page) in ("running", "stopping"):
            return step
        time.sleep(0.5)
    raise AssertionError(f"progress stayed at step {progress_step(page)} (status {status(page)})")


def stop_if_running(page: "Page") -> None:
    try:
        if status(page) in ("starting", "running"):
            page.click("#stop-button")
            wait_status(page, ("stopped", "completed", "failed"), 300)
    except Exception:  # noqa: BLE001 - cleanup only
        pass


def is_checked(page: "Page", field: str) -> bool:
    show_field(page, field)
    return page.locator(f"#field-{field} input[type=checkbox]").is_checked()


def open_problems(page: "Page") -> None:
    """Unfold the problem list above Start (its one-line summary's count; the summary's link jumps instead)."""
    page.click("#issues-overview summary .lg-overview-head")
    page.wait_for_selector("#issues-overview details[open] ul", state="visible")
