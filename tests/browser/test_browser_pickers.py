"""File pickers beside the path fields, the one-line action bar, and the model download from a local hub."""

from __future__ import annotations

from playwright.sync_api import expect

from hub_server import TEST_REPO as HUB_REPO
from gui_helpers import get_field, open_problems, set_field, show_field

CHECK_WAIT = 30_000  # form checks queue on a busy machine
DOWNLOAD_WAIT = 180_000


def _browse(page, field: str) -> None:
    show_field(page, field)
    page.click(f"#field-{field}-browse")
    expect(page.locator("#file-picker")).to_be_visible()


def _go_to(page, folder) -> None:
    box = page.locator("#picker-folder textarea, #picker-folder input").first
    box.fill(str(folder))
    box.press("Enter")
    expect(page.locator("#picker-folder textarea, #picker-folder input").first).to_have_value(str(folder))


def _entry(page, text: str):
    return page.locator("#picker-entries label").filter(has_text=text)


def test_picker_fills_a_folder_field_and_a_file_field(open_page, shot, tmp_path):
    (tmp_path / "img" / "10_sks disc").mkdir(parents=True)
    (tmp_path / "weights.safetensors").write_bytes(b"\0" * 2048)
    (tmp_path / "notes.txt").write_text("not a LoRA")
    page = open_page()

    _browse(page, "train_data_dir")
    expect(page.locator("#picker-use-file")).to_be_hidden()  # a folder field takes no file
    _go_to(page, tmp_path)
    expect(_entry(page, "img/")).to_have_count(1)
    expect(_entry(page, "weights.safetensors")).to_have_count(0)  # folders only
    _entry(page, "img/").click()  # walks into it
    expect(page.locator("#picker-folder textarea, #picker-folder input").first).to_have_value(str(tmp_path / "img"))
    expect(_entry(page, "10_sks disc/")).to_have_count(1)
    shot(page, "folder", full_page=False)
    page.click("#picker-use-folder")
    expect(page.locator("#file-picker")).to_be_hidden()
    assert get_field(page, "train_data_dir") == str(tmp_path / "img")

    _browse(page, "network_weights")
    _go_to(page, tmp_path)
    expect(_entry(page, "weights.safetensors")).to_have_count(1)
    expect(_entry(page, "notes.txt")).to_have_count(0)  # not a file this field takes
    expect(page.locator("#picker-note")).to_contain_text("1 other entries are not shown")
    page.click("#picker-use-file")  # nothing selected yet: it says so and stays open
    expect(page.locator("#picker-note")).to_contain_text("Select a file")
    _entry(page, "weights.safetensors").click()
    page.click("#picker-use-file")
    expect(page.locator("#file-picker")).to_be_hidden()
    assert get_field(page, "network_weights") == str(tmp_path / "weights.safetensors")
    assert get_field(page, "train_data_dir") == str(tmp_path / "img")  # the other field kept its value

    # typing keeps working, and the picker opens where the field points
    set_field(page, "output_dir", str(tmp_path / "img" / "10_sks disc"))
    _browse(page, "output_dir")
    expect(page.locator("#picker-folder textarea, #picker-folder input").first).to_have_value(
        str(tmp_path / "img" / "10_sks disc"))
    page.click("#picker-up")
    expect(page.locator("#picker-folder textarea, #picker-folder input").first).to_have_value(str(tmp_path / "img"))
    page.click("#picker-cancel")
    expect(page.locator("#file-picker")).to_be_hidden()
    assert get_field(page, "output_dir") == str(tmp_path / "img" / "10_sks disc")


def test_utilities_lora_rows_have_pickers(open_page, tmp_path):
    (tmp_path / "a.safetensors").write_bytes(b"\0" * 16)
    page = open_page()
    page.click("#tab-utilities-button")
    page.locator("#utility-tabs").get_by_role("tab", name="Merge", exact=True).click()
    page.click("#tool-merge-models-0-browse")
    expect(page.locator("#file-picker")).to_be_visible()
    _go_to(page, tmp_path)
    _entry(page, "a.safetensors").click()
    page.click("#picker-use-file")
    expect(page.locator("#tool-merge-models-0 textarea, #tool-merge-models-0 input").first).to_have_value(
        str(tmp_path / "a.safetensors"))


def test_action_bar_is_one_line_with_the_problems_folded(browser, app_url, shot):
    ctx = browser.new_context(locale="en-US", viewport={"width": 1440, "height": 900})
    try:
        page = ctx.new_page()
        page.set_default_timeout(30_000)
        page.goto(app_url)
        page.wait_for_selector("#run-status .lg-status", timeout=30_000)
        expect(page.locator("#issues-overview .lg-ov-error")).to_have_count(0, timeout=CHECK_WAIT)  # a fresh demo page
        for field, value in (("train_data_dir", "/no/such/folder"), ("output_dir", ""), ("network_alpha", 64)):
            set_field(page, field, value)
        expect(page.locator("#issues-overview li")).to_have_count(3, timeout=CHECK_WAIT)
        summary = page.locator("#issues-overview summary")
        expect(summary).to_contain_text("2 error(s), 1 warning(s)")
        expect(page.locator("#issues-overview ul")).to_be_hidden()  # folded
        bar = page.locator("#action-bar").bounding_box()
        start, status = page.locator("#start-button").bounding_box(), page.locator("#run-status").bounding_box()
        assert bar["height"] < 140, bar
        assert abs(start["y"] + start["height"] / 2 - (status["y"] + status["height"] / 2)) < 12  # one line
        shot(page, "folded", full_page=False)
        open_problems(page)
        set_field(page, "network_alpha", 32)  # a redraw keeps the list open
        expect(page.locator("#issues-overview li")).to_have_count(3, timeout=CHECK_WAIT)
        expect(page.locator("#issues-overview ul")).to_be_visible()
    finally:
        ctx.close()


def test_model_download_from_the_hub(open_page, shot):
    page = open_page()
    set_field(page, "pretrained_model_name_or_path", HUB_REPO)
    note = page.locator("#field-pretrained_model_name_or_path-issues")
    expect(note).to_contain_text("Download from the Hub", timeout=CHECK_WAIT)  # not in the cache: it says how
    page.click("#hub-download")
    expect(page.locator("#hub-status [data-status=done]")).to_have_count(1, timeout=DOWNLOAD_WAIT)
    expect(page.locator("#hub-status")).to_contain_text("local Hugging Face cache")
    expect(note.locator(".lg-detected[data-family=sd1]")).to_have_count(1, timeout=CHECK_WAIT)
    shot(page, "downloaded", full_page=False)

    set_field(page, "pretrained_model_name_or_path", "not an id")
    page.click("#hub-download")
    expect(page.locator("#hub-status")).to_contain_text("owner/name")
