"""Utilities tab: form -> exact `python -m trainer.tools` argv, the checks before a run, the runner,
and the report JSON -> table rows / HTML (no browser)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from lora_gui import tools_runner
from lora_gui.tool_args import build, clean_path, number_text
from lora_gui.tool_view import inspect_rows, render_result, render_running, report_rows
from lora_gui.tools_runner import ToolBusy, ToolResult, ToolRunner, tool_command

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def files(tmp_path) -> dict[str, str]:
    """Stand-in input files (the checks only look at paths; the runner test writes a real LoRA)."""
    paths = {}
    for name in ("a", "b", "c"):
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(b"x")
        paths[name] = str(path)
    (tmp_path / "model").mkdir()
    paths["model"] = str(tmp_path / "model")
    paths["out"] = str(tmp_path / "out" / "new.safetensors")
    return paths


def _problems(args) -> dict[str, str]:
    return {p.field: p.key for p in args.problems}


# ---- argv ---------------------------------------------------------------------------------------------
def test_resize_argv(files):
    args = build("resize", {"model": files["a"], "new_rank": 2.0, "new_conv_rank": "", "dynamic_method": "sv_fro",
                            "dynamic_param": "0.75", "save_to": files["out"], "save_precision": "fp16",
                            "device": "cpu", "verbose": True, "overwrite": False})
    assert args.ok, args.problems
    assert args.argv == ["resize", "--model", files["a"], "--new_rank", "2", "--dynamic_method", "sv_fro",
                         "--dynamic_param", "0.75", "--save_to", files["out"], "--save_precision", "fp16",
                         "--device", "cpu", "--verbose"]
    fixed = build("resize", {"model": files["a"], "new_rank": 8, "new_conv_rank": "4", "dynamic_method": "none",
                             "dynamic_param": "", "save_to": files["out"], "save_precision": "float",
                             "device": "cuda", "verbose": False, "overwrite": True})
    assert fixed.argv == ["resize", "--model", files["a"], "--new_rank", "8", "--new_conv_rank", "4", "--save_to",
                          files["out"], "--save_precision", "float", "--device", "cuda", "--overwrite"]


def test_merge_argv_skips_empty_rows_and_can_merge_into_a_checkpoint(files, tmp_path):
    form = {"models.0": files["a"], "ratios.0": 1.5, "models.1": "", "ratios.1": 1.0, "models.2": f'"{files["b"]}"',
            "ratios.2": -1.5, "models.3": "  ", "ratios.3": 1.0, "into_checkpoint": False, "sd_model": "",
            "save_to": files["out"], "save_precision": "fp16", "overwrite": False}
    args = build("merge", form)
    assert args.ok, args.problems
    assert args.argv == ["merge", "--models", files["a"], files["b"], "--ratios", "1.5", "-1.5", "--save_to",
                         files["out"], "--save_precision", "fp16"]
    into = build("merge", dict(form, into_checkpoint=True, sd_model=files["model"],
                               save_to=str(tmp_path / "merged.ckpt")))
    assert into.ok, into.problems
    assert into.argv == ["merge", "--models", files["a"], files["b"], "--ratios", "1.5", "-1.5", "--sd_model",
                         files["model"], "--save_to", str(tmp_path / "merged.ckpt"), "--save_precision", "fp16"]
    # a checkpoint is a .safetensors or .ckpt file
    bad = build("merge", dict(form, into_checkpoint=True, sd_model=files["model"], save_to=str(tmp_path / "m.pt")))
    assert _problems(bad) == {"save_to": "tool_err.bad_suffix"}


def test_svd_merge_and_extract_argv(files):
    svd = build("svd_merge", {"models.0": files["b"], "ratios.0": 1.5, "models.1": files["a"], "ratios.1": -1.5,
                              "new_rank": 8, "new_conv_rank": "", "clamp_quantile": 0.99, "save_to": files["out"],
                              "save_precision": "fp16", "device": "cuda", "verbose": True, "overwrite": False})
    assert svd.argv == ["svd_merge", "--models", files["b"], files["a"], "--ratios", "1.5", "-1.5", "--new_rank", "8",
                        "--clamp_quantile", "0.99", "--save_to", files["out"], "--save_precision", "fp16",
                        "--device", "cuda", "--verbose"]
    ext = build("extract", {"model_org": files["model"], "model_tuned": files["c"], "dim": 16, "conv_dim": "8",
                            "clamp_quantile": 1.0, "min_diff": 0.01, "save_to": files["out"], "save_precision": "bf16",
                            "device": "cpu", "verbose": False, "overwrite": False})
    assert ext.argv == ["extract", "--model_org", files["model"], "--model_tuned", files["c"], "--dim", "16",
                        "--conv_dim", "8", "--clamp_quantile", "1", "--min_diff", "0.01", "--save_to", files["out"],
                        "--save_precision", "bf16", "--device", "cpu"]
    assert build("inspect", {"model": files["a"]}).argv == ["inspect", "--model", files["a"], "--json"]


def test_runner_adds_its_machine_readable_outputs(tmp_path):
    report = tmp_path / "report.json"
    assert tool_command(["resize", "--model", "a"], report) == [
        sys.executable, "-m", "trainer.tools", "resize", "--model", "a", "--progress_lines", "--json", str(report)]
    assert tool_command(["inspect", "--model", "a", "--json"], report) == [
        sys.executable, "-m", "trainer.tools", "inspect", "--model", "a", "--json"]


# ---- checks before a run ------------------------------------------------------------------------------------
def test_problems_sit_under_their_field(files, tmp_path):
    base = {"model": files["a"], "new_rank": 4, "new_conv_rank": "", "dynamic_method": "none", "dynamic_param": "",
            "save_to": files["out"], "save_precision": "fp16", "device": "cpu", "verbose": False, "overwrite": False}
    assert _problems(build("resize", dict(base, model=str(tmp_path / "missing.safetensors")))) == {
        "model": "tool_err.no_such_file"}
    assert _problems(build("resize", dict(base, model=""))) == {"model": "tool_err.path_needed"}
    assert _problems(build("resize", dict(base, model=str(tmp_path)))) == {"model": "tool_err.is_folder"}
    # the output is never an input (with or without the suffix the tool would add)
    assert _problems(build("resize", dict(base, save_to=files["a"], overwrite=True))) == {
        "save_to": "tool_err.save_to_is_input"}
    assert _problems(build("resize", dict(base, save_to=files["a"][: -len(".safetensors")]))) == {
        "save_to": "tool_err.save_to_is_input"}
    # an existing output needs Overwrite
    assert _problems(build("resize", dict(base, save_to=files["b"]))) == {"save_to": "tool_err.save_to_exists"}
    assert build("resize", dict(base, save_to=files["b"], overwrite=True)).ok
    assert _problems(build("resize", dict(base, save_to=""))) == {"save_to": "tool_err.save_to_needed"}
    assert _problems(build("resize", dict(base, save_to=str(tmp_path / "x.txt")))) == {"save_to": "tool_err.bad_suffix"}
    # numbers and the dynamic parameter
    assert _problems(build("resize", dict(base, new_rank=2.5))) == {"new_rank": "tool_err.whole_number"}
    assert _problems(build("resize", dict(base, new_rank=0))) == {"new_rank": "tool_err.at_least"}
    assert _problems(build("resize", dict(base, new_conv_rank="two"))) == {"new_conv_rank": "tool_err.not_a_number"}
    assert _problems(build("resize", dict(base, dynamic_method="sv_fro", dynamic_param="1.5"))) == {
        "dynamic_param": "tool_err.fraction_param"}
    assert _problems(build("resize", dict(base, dynamic_method="sv_ratio", dynamic_param="0.5"))) == {
        "dynamic_param": "tool_err.sv_ratio_param"}
    assert _problems(build("resize", dict(base, dynamic_method="sv_fro", dynamic_param=""))) == {
        "dynamic_param": "tool_err.number_needed"}
    merge = {"models.0": "", "ratios.0": 1.0, "save_to": files["out"], "save_precision": "fp16"}
    assert _problems(build("merge", merge)) == {"models.0": "tool_err.models_needed"}
    assert _problems(build("merge", dict(merge, **{"models.1": files["a"], "ratios.1": None}))) == {
        "ratios.1": "tool_err.number_needed"}
    ext = {"model_org": files["model"], "model_tuned": files["model"], "dim": 4, "conv_dim": "", "clamp_quantile": 0.99,
           "min_diff": 0.01, "save_to": files["out"], "save_precision": "fp16"}
    assert _problems(build("extract", ext)) == {"model_tuned": "tool_err.same_models"}


def test_paths_and_numbers_as_typed():
    assert clean_path('  "C:\\My LoRAs\\a.safetensors" ') == "C:\\My LoRAs\\a.safetensors"
    assert clean_path("'/x/y'") == "/x/y" and clean_path(None) == ""
    assert [number_text(v) for v in (8.0, 1.5, -1.5, 5e-05, 0.99)] == ["8", "1.5", "-1.5", "5e-05", "0.99"]


# ---- reports -> rows ----------------------------------------------------------------------------------------
def test_tool_report_json_becomes_table_rows():
    from trainer.tools.report import ModuleChange, ToolReport

    report = ToolReport("resize", {"new_rank": 2}, output="/x/out.safetensors", elapsed_s=0.5, modules=[
        ModuleChange("lora_unet_a_to_q", "linear", 4, 2, 0.5, 0.913, 0.71, 1.93, rel_error=0.368),
        ModuleChange("lora_unet_b_conv", "conv3x3", 4, 1, 0.25, 1.0, 1.0, float("inf"), note="zero module"),
    ])
    data = json.loads(json.dumps(report.to_dict()))  # as the CLI writes it (inf becomes "inf")
    rows = report_rows(data)
    assert [(r.module, r.kind, r.rank_in, r.rank) for r in rows] == [("lora_unet_a_to_q", "linear", 4, 2),
                                                                     ("lora_unet_b_conv", "conv3x3", 4, 1)]
    assert rows[0].fro_kept == pytest.approx(0.913) and rows[1].max_ratio == float("inf")
    html = render_result(ToolResult("resize", False, 1.0, exit_code=0, report=data), "en", table=True)
    assert 'data-rows="2"' in html and "4 → 2" in html and "91.3 %" in html and "∞" in html
    assert "Saved /x/out.safetensors" in html and "rank 2 × 1" in html and "Frobenius norm kept" in html
    assert "zero module" in html
    without_table = render_result(ToolResult("resize", False, 1.0, exit_code=0, report=data), "en", table=False)
    assert "lg-report-table" not in without_table and "Frobenius norm kept" in without_table
    assert "フロベニウスノルム" in render_result(ToolResult("resize", False, 1.0, exit_code=0, report=data), "ja",
                                        table=True)


def test_inspect_report_json_becomes_rows():
    from trainer.tools.report import InspectReport, ModuleInfo

    report = InspectReport("/x/a.safetensors", {"ss_network_dim": "4"}, [
        ModuleInfo("lora_unet_x", "conv3x3", 320, 640, [3, 3], 4, 1.0, 0.25, "float16", 1.0, 1.0, 0.01, 0.1, 0.1,
                   zero_up=True, nonfinite=False)], problems=["lora_unet_x: lora_up is all zeros"])
    data = json.loads(json.dumps(report.to_dict()))
    (row,) = inspect_rows(data)
    assert (row.shape, row.rank, row.dtype, row.flags) == ("320×640×3×3", 4, "float16", ["ZERO_UP"])
    html = render_result(ToolResult("inspect", False, 1.0, exit_code=0, report=data), "en", table=True)
    assert "1 problem(s) found" in html and "lora_up is all zeros" in html and "ss_network_dim" in html


def test_errors_are_messages_never_tracebacks():
    html = render_result(ToolResult("resize", False, 1.0, exit_code=1, error="LoRA file not found: /x"), "en",
                         table=True)
    assert "The tool stopped: LoRA file not found: /x" in html and 'data-state="failed"' in html
    crash = render_result(ToolResult("resize", False, 1.0, exit_code=3, crash="RuntimeError: boom"), "en", table=True)
    assert "exit code 3" in crash and "RuntimeError: boom" in crash and "Traceback" not in crash
    running = render_running(ToolResult("resize", True, 2.0, progress=(36, 72)), "resize", "en")
    assert 'aria-valuenow="50"' in running and "36 / 72 modules" in running


# ---- the runner ---------------------------------------------------------------------------------------------
def test_runner_one_run_at_a_time_and_crash_lines(monkeypatch, tmp_path):
    script = "import sys, time; print('PROGRESS 1/2', file=sys.stderr, flush=True); time.sleep(1.5); " \
             "raise RuntimeError('boom')"
    monkeypatch.setattr(tools_runner, "tool_command", lambda argv, report: [sys.executable, "-c", script])
    runner = ToolRunner()
    run_id = runner.start(["resize"])
    with pytest.raises(ToolBusy) as busy:
        runner.start(["merge"])
    assert busy.value.tool == "resize"
    result = runner.wait(run_id, 60)
    assert result is not None and not result.running and result.exit_code == 1
    assert result.crash == "RuntimeError: boom" and result.progress == (1, 2) and not result.ok
    assert not runner.busy()


def test_runner_runs_the_real_cli(tmp_path):
    """The real `python -m trainer.tools resize` on a small random LoRA: report, progress, then its refusal."""
    from trainer.network.kohya_format import write_lora_file
    from trainer.tools.factors import ModuleShape
    from trainer.tools.synthetic import random_lora

    lora = tmp_path / "in.safetensors"
    shapes = {"lora_unet_down_blocks_0_attentions_0_proj_in": ModuleShape(32, 32, (1, 1)),
              "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": ModuleShape(32, 32)}
    write_lora_file(lora, random_lora(shapes, 4, 4.0), save_precision="float")
    out = tmp_path / "out.safetensors"
    args = build("resize", {"model": str(lora), "new_rank": 2, "new_conv_rank": "", "dynamic_method": "none",
                            "dynamic_param": "", "save_to": str(out), "save_precision": "fp16", "device": "cpu",
                            "verbose": True, "overwrite": False})
    runner = ToolRunner()
    result = runner.wait(runner.start(args.argv, save_to=str(args.save_to)), 240)
    assert result is not None and result.ok, (result.error, result.crash)
    assert result.progress == (2, 2) and out.is_file()
    assert {r.rank for r in report_rows(result.report)} == {2}
    # the same output again: the CLI refuses, the page shows its one line
    again = runner.wait(runner.start(args.argv), 240)
    assert again.exit_code == 1 and "already exists" in again.error
