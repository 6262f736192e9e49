"""`python -m trainer.tools` end to end (subprocess), plus the output-path rules of the file API."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainer.fileio import OutputExistsError
from trainer.network.kohya_format import read_lora_file, write_lora_file
from trainer.tools.__main__ import main
from trainer.tools.errors import ToolError
from trainer.tools.factors import ModuleShape
from trainer.tools.merge import merge_files
from trainer.tools.resize import resize_file
from trainer.tools.synthetic import random_lora

ROOT = Path(__file__).resolve().parent.parent
SHAPES = {
    "lora_te_text_model_encoder_layers_0_mlp_fc1": ModuleShape(64, 32),
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": ModuleShape(32, 32),
    "lora_unet_down_blocks_0_attentions_0_proj_out": ModuleShape(32, 32, (1, 1)),
    "lora_unet_down_blocks_0_resnets_0_conv2": ModuleShape(16, 8, (3, 3)),
}


def tools(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    """The CLI in a subprocess (smoke test of `python -m trainer.tools`)."""
    proc = subprocess.run([sys.executable, "-m", "trainer.tools", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    if ok:
        assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc


def inproc(*args: str) -> subprocess.CompletedProcess:
    """The same CLI entry point in this process (cheaper: no interpreter + torch start-up)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


@pytest.fixture
def loras(tmp_path) -> tuple[Path, Path]:
    meta = {"ss_base_model_version": "sd_v1", "ss_v2": "False", "ss_training_comment": "trained"}
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    write_lora_file(a, random_lora(SHAPES, 8, 4.0, conv_rank=4, conv_alpha=2.0, seed=0, metadata=meta),
                    save_precision="float")
    write_lora_file(b, random_lora(SHAPES, 4, 4.0, conv_rank=4, conv_alpha=4.0, seed=1, metadata=meta),
                    save_precision="float")
    return a, b


def test_cli_inspect(loras):
    a, _ = loras
    text = tools("inspect", "--model", str(a)).stdout
    assert "lora_unet_down_blocks_0_resnets_0_conv2" in text and "conv3x3" in text
    assert "no problems found" in text
    data = json.loads(inproc("inspect", "--model", str(a), "--json").stdout)
    assert data["summary"]["modules"] == 4
    assert data["metadata"]["ss_training_comment"] == "trained"
    assert {m["rank"] for m in data["modules"]} == {8, 4}


def test_cli_inspect_flags_zero_up_and_nan(tmp_path):
    lora = random_lora(SHAPES, 4, 4.0)
    names = list(SHAPES)
    lora.modules[names[0]].up.zero_()
    lora.modules[names[1]].down[0, 0] = float("nan")
    path = tmp_path / "bad.safetensors"
    write_lora_file(path, lora, save_precision="fp16")
    text = inproc("inspect", "--model", str(path), "--summary").stdout
    assert f"{names[0]}: lora_up is all zeros" in text
    assert f"{names[1]}: NaN or inf" in text


def test_cli_resize(loras, tmp_path):
    a, _ = loras
    out, report = tmp_path / "small.safetensors", tmp_path / "report.json"
    proc = tools("resize", "--model", str(a), "--new_rank", "4", "--new_conv_rank", "2", "--dynamic_method",
                 "sv_fro", "--dynamic_param", "0.9", "--verbose", "--save_precision", "fp16", "--save_to", str(out),
                 "--json", str(report))
    assert "fro retained" in proc.stdout and "Frobenius norm retained" in proc.stdout
    lora = read_lora_file(out)
    assert lora.modules["lora_unet_down_blocks_0_resnets_0_conv2"].rank <= 2
    assert lora.modules["lora_unet_down_blocks_0_resnets_0_conv2"].down.dtype == torch.float16
    assert lora.metadata["ss_training_comment"].startswith("Dynamic resize with sv_fro: 0.9 from 8; trained")
    assert lora.metadata["sshs_model_hash"]
    data = json.loads(report.read_text())
    assert data["command"] == "resize" and len(data["modules"]) == 4
    assert all(m["fro_retained"] >= 0.9 - 1e-9 or m["rank"] in (2, 4) for m in data["modules"])


def test_cli_merge_and_svd_merge(loras, tmp_path):
    a, b = loras
    merged = tmp_path / "merged.safetensors"
    tools("merge", "--models", str(a), str(b), "--ratios", "1", "-0.5", "--save_to", str(merged))
    la, lb, lm = read_lora_file(a), read_lora_file(b), read_lora_file(merged)
    for name in SHAPES:
        expected = la.modules[name].delta_weight() - 0.5 * lb.modules[name].delta_weight()
        assert torch.allclose(lm.modules[name].delta_weight(), expected, atol=1e-6)
    assert lm.metadata["modelspec.merged_from"] == "a, b"
    assert lm.metadata["ss_base_model_version"] == "sd_v1"

    svd = tmp_path / "svd.safetensors"
    proc = tools("svd_merge", "--models", str(a), str(b), "--ratios", "0.5", "0.5", "--new_rank", "3",
                 "--new_conv_rank", "2", "--save_to", str(svd), "--verbose")
    assert "svd_merge: 4 modules written" in proc.stdout
    ls = read_lora_file(svd)
    assert ls.modules["lora_unet_down_blocks_0_resnets_0_conv2"].rank == 2
    assert ls.modules["lora_unet_down_blocks_0_attentions_0_proj_out"].rank == 3
    assert ls.metadata["ss_network_dim"] == "3" and json.loads(ls.metadata["ss_network_args"])["conv_dim"] == "2"

    proc = inproc("merge", "--models", str(a), "--ratios", "1", "--sd_model", str(tmp_path / "missing.ckpt"),
                  "--save_to", str(tmp_path / "c.safetensors"))
    assert proc.returncode == 1 and "cannot load model" in proc.stderr


def test_cli_extract(tmp_path):
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    org = {n: torch.randn(s.weight_shape(), generator=gen) for n, s in SHAPES.items()}
    tuned = {}
    for n, s in SHAPES.items():
        d = torch.randn(s.out_features, 2, generator=gen) @ torch.randn(2, s.flat_in, generator=gen)
        tuned[n] = org[n] + 0.05 * d.reshape(s.weight_shape())
    save_file({f"{n}.weight": w for n, w in org.items()}, tmp_path / "org.safetensors")
    save_file({f"{n}.weight": w for n, w in tuned.items()}, tmp_path / "tuned.safetensors")
    out = tmp_path / "extracted.safetensors"
    tools("extract", "--model_org", str(tmp_path / "org.safetensors"), "--model_tuned",
          str(tmp_path / "tuned.safetensors"), "--dim", "2", "--conv_dim", "2", "--clamp_quantile", "1",
          "--save_to", str(out))
    lora = read_lora_file(out)
    assert set(lora.modules) == set(SHAPES)
    for n in SHAPES:
        assert torch.allclose(lora.modules[n].delta_weight(), tuned[n] - org[n], atol=1e-4)
    assert lora.metadata["ss_base_model_version"] == "sd_v1"
    # something that is neither a model nor a module-weights file: a clear error, exit status 1
    proc = inproc("extract", "--model_org", str(tmp_path / "nothing"), "--model_tuned",
                  str(tmp_path / "org.safetensors"), "--save_to", str(tmp_path / "x.safetensors"))
    assert proc.returncode == 1 and "cannot load model" in proc.stderr, proc.stderr


def test_cli_refuses_to_overwrite(loras, tmp_path):
    a, b = loras
    proc = inproc("resize", "--model", str(a), "--save_to", str(a), "--overwrite")
    assert proc.returncode == 1 and "one of the input files" in proc.stderr
    proc = inproc("merge", "--models", str(a), str(b), "--ratios", "1", "1", "--save_to", str(b))
    assert proc.returncode == 1
    proc = inproc("resize", "--model", str(a), "--save_to", str(tmp_path / "sub" / ".." / "a.safetensors"))
    assert proc.returncode == 1
    assert proc.stderr.startswith("error:")


def test_file_api_output_rules(loras, tmp_path):
    a, b = loras
    before = a.read_bytes()
    with pytest.raises(ToolError, match="input"):
        resize_file(a, a, 2, overwrite=True)
    with pytest.raises(ToolError, match="input"):
        merge_files([a, b], [1, 1], b, overwrite=True)
    assert a.read_bytes() == before
    existing = tmp_path / "exists.safetensors"
    existing.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError):
        resize_file(a, existing, 2)
    assert existing.read_bytes() == b"keep me"
    report = resize_file(a, existing, 2, overwrite=True)
    assert read_lora_file(existing).modules and report.output == str(existing)
    report = resize_file(a, tmp_path / "nosuffix", 2)
    assert report.output.endswith("nosuffix.safetensors")


def test_cli_progress_lines_for_programs(loras, tmp_path):
    """--progress_lines: machine-readable `PROGRESS done/total` lines on stderr (the GUI's progress bar)."""
    a, _ = loras
    proc = inproc("resize", "--model", str(a), "--new_rank", "2", "--save_to", str(tmp_path / "r.safetensors"),
                  "--progress_lines")
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("PROGRESS ")]
    assert lines and lines[-1] == "PROGRESS 4/4"
    quiet = inproc("resize", "--model", str(a), "--new_rank", "2", "--save_to", str(tmp_path / "q.safetensors"))
    assert "PROGRESS" not in quiet.stderr  # without the flag (and no TTY): nothing
