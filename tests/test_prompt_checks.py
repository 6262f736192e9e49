"""Sample prompts are checked in the torch-free pre-flight: every problem with its line and option, before training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import dump, event_types, make_run_config, run_engine
from trainer.config import TrainConfig
from trainer.prompts import SamplePrompt, parse_prompts, read_prompts
from trainer.validation import CODES, validate

REPO = Path(__file__).resolve().parents[1]


def _prompt_issues(**fields):
    return [i for i in validate(TrainConfig(**fields)) if i.field == "sample_prompts"]


def test_bad_options_are_named_with_their_line():
    text = "# comment\na red disc --w 512 --s 20\n\na blue disc --w abc --s -1 --ss nope --l x --h\nthird --zz 3"
    problems = read_prompts(text).problems
    found = {(p.code, p.params.get("line"), p.params.get("option")) for p in problems}
    assert found == {("sample_prompt_not_a_number", 4, "w"), ("sample_prompt_out_of_range", 4, "s"),
                     ("sample_prompt_unknown_sampler", 4, None), ("sample_prompt_not_a_number", 4, "l"),
                     ("sample_prompt_option_empty", 4, "h"), ("sample_prompt_unknown_option", 5, "zz")}
    levels = {p.code: p.level for p in problems}
    assert levels["sample_prompt_unknown_option"] == "warning" and levels["sample_prompt_not_a_number"] == "error"
    width = next(p for p in problems if p.params.get("option") == "w")
    assert "line 4" in width.message and "--w abc" in width.message and "whole number" in width.message
    # The sampler stays lenient, as sd-scripts: the bad options fall back to the defaults.
    assert parse_prompts(text)[1] == SamplePrompt(prompt="a blue disc", steps=1)


def test_good_prompts_have_no_problems():
    text = "a disc --n blurry, low quality --w 640 --h 512 --s 28 --l 7 --d 42 --ss k_euler_a\nplain"
    assert read_prompts(text).problems == []
    assert _prompt_issues(sample_prompts=text, sample_every_n_epochs=1) == []


def test_prompt_file_missing_empty_and_with_bad_lines(tmp_path):
    missing = tmp_path / "missing.txt"
    (issue,) = _prompt_issues(sample_prompts=str(missing), sample_every_n_epochs=1)
    assert (issue.level, issue.code, issue.params["path"]) == ("error", "sample_prompt_file_missing", str(missing))

    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n", encoding="utf-8")
    (issue,) = _prompt_issues(sample_prompts=str(empty), sample_every_n_epochs=1)
    assert (issue.level, issue.code) == ("warning", "sample_prompt_file_empty")
    assert str(empty) in issue.message

    bad = tmp_path / "prompts.txt"
    bad.write_text("# header\nfine --s 10\nbroken --s many\n", encoding="utf-8")
    (issue,) = _prompt_issues(sample_prompts=str(bad), sample_every_n_epochs=1)
    assert (issue.code, issue.params["line"], issue.params["option"]) == ("sample_prompt_not_a_number", 3, "s")

    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 au lait".encode("latin-1"))
    (issue,) = _prompt_issues(sample_prompts=str(latin1), sample_every_n_epochs=1)
    assert issue.code == "sample_prompt_file_unreadable" and "UTF-8" in issue.message


def test_every_prompt_code_is_listed_and_translated():
    import json

    ja = json.loads((REPO / "lora_gui/i18n/ja.json").read_text(encoding="utf-8"))["validation"]
    codes = {p.code for p in read_prompts("x --w a --s 0 --ss q --h --zz 1").problems}
    codes |= {"sample_prompt_file_missing", "sample_prompt_file_empty", "sample_prompt_file_unreadable"}
    assert codes <= set(CODES) and codes <= set(ja)


def test_prompt_checks_do_not_import_torch():
    code = ("import sys; from trainer.validation import validate; from trainer.config import TrainConfig; "
            "validate(TrainConfig(sample_prompts='a --w abc')); assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr


def test_engine_refuses_bad_prompts_before_training(tiny_sd1, image_root, tmp_path):
    cfg = make_run_config(tmp_path, tiny_sd1, image_root, sample_every_n_epochs=1,
                          sample_prompts="sks disc --w 64 --h 64\nsks disc --w abc --s -1")
    proc, events = run_engine(cfg, tmp_path)
    assert proc.returncode == 1, dump(events)
    errors = [e for e in events if e["type"] == "error"]
    assert {(e["code"], e["params"]["line"], e["params"]["option"]) for e in errors} == {
        ("sample_prompt_not_a_number", 2, "w"), ("sample_prompt_out_of_range", 2, "s")}
    assert all(e["field"] == "sample_prompts" for e in errors)
    assert "start" not in event_types(events) and "step" not in event_types(events)
