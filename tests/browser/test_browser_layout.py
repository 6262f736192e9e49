"""Layout in the browser, measured: columns line up, no line is cut, one Start per tab, long choices fit."""

from __future__ import annotations

import time

from playwright.sync_api import expect

from gui_helpers import open_problems, set_field

CHECK_WAIT = 30_000  # form checks queue on a busy machine

COLUMN_EDGES = """() => [...document.querySelectorAll('#dataset-summary table.lg-table')].flatMap(table => {
  const heads = [...table.querySelectorAll('thead th')];
  const cells = [...table.querySelector('tbody tr').children];
  return heads.map((th, i) => ({num: th.classList.contains('num'), text: th.innerText,
    head: th.getBoundingClientRect(), cell: cells[i].getBoundingClientRect(),
    headText: th.scrollWidth, align: getComputedStyle(th).textAlign}));
})"""

CUT_LINES = """() => {
  const box = document.querySelector('#issues-overview .lg-overview ul');
  const outer = box.getBoundingClientRect();
  const top = outer.top + box.clientTop, bottom = top + box.clientHeight;
  return [...box.querySelectorAll('li')].map(li => li.getBoundingClientRect())
    .filter(r => r.bottom > top + 0.5 && r.top < bottom - 0.5)  // at least partly shown
    .filter(r => r.top < top - 0.5 || r.bottom > bottom + 0.5).length;  // ... but not wholly
}"""


def test_dataset_numbers_sit_under_their_headers(open_page, shot):
    page = open_page()
    page.click("#tab-folders-button")
    expect(page.locator("#dataset-summary table.lg-table").first).to_be_visible(timeout=CHECK_WAIT)
    columns = page.evaluate(COLUMN_EDGES)
    assert columns
    for column in columns:
        edge = "right" if column["num"] else "left"
        assert abs(column["head"][edge] - column["cell"][edge]) < 1.5, column  # same column box
        assert column["align"] == ("right" if column["num"] else "left"), column
    shot(page, "dataset")


def test_problem_list_never_shows_half_a_line(open_page, shot):
    page = open_page()
    # more problems than the box has lines (4 errors of the run's check, and warnings: alpha > rank, prompts
    # without a sample cadence)
    for field, value in (("train_data_dir", ""), ("output_dir", ""), ("output_name", "a/b"), ("network_alpha", 64),
                         ("sample_every_n_epochs", 0), ("pretrained_model_name_or_path", "")):
        set_field(page, field, value)
    items = page.locator("#issues-overview .lg-overview li")
    expect(items.nth(4)).to_be_attached(timeout=CHECK_WAIT)
    open_problems(page)  # the list is folded into one line until opened
    assert page.evaluate(CUT_LINES) == 0
    for offset in (7, 23, 1000):  # scrolled by a little, then to the end: it snaps to whole lines
        page.evaluate(f"() => document.querySelector('#issues-overview .lg-overview ul').scrollTop = {offset}")
        time.sleep(0.8)
        assert page.evaluate(CUT_LINES) == 0, offset
    shot(page, "problems", full_page=False)


def test_slider_tab_has_one_start_and_is_quiet_until_touched(open_page, shot):
    page = open_page()
    page.click("#tab-slider-button")
    expect(page.locator("#slider-start")).to_be_visible()
    expect(page.locator("#start-button")).to_be_hidden()  # the training's Start belongs to the training tabs
    expect(page.locator("#print-button")).to_be_hidden()
    time.sleep(2)  # the load-time check has run
    expect(page.locator("#slider-overview .lg-overview")).to_have_count(0)
    assert not page.locator("#slider-pairs-issues .lg-issue").count()
    shot(page, "untouched", full_page=False)
    page.locator("#slider-pair-0-low textarea, #slider-pair-0-low input").first.fill("/no/such/folder")
    page.keyboard.press("Tab")
    expect(page.locator("#slider-overview .lg-overview")).to_have_count(1, timeout=CHECK_WAIT)
    page.click("#tab-parameters-button")
    expect(page.locator("#start-button")).to_be_visible()


def test_slider_resize_method_shows_its_whole_choice(open_page, shot):
    page = open_page()
    page.click("#tab-slider-button")
    box = page.locator("#slider-resize-method input")
    expect(box).to_have_value("sv_fro (share of the Frobenius norm)")
    assert box.evaluate("el => el.scrollWidth <= el.clientWidth"), "the choice runs under the arrow"
    shot(page, "resize-method")
