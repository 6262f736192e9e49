"""The web process never imports torch (nor diffusers / transformers / peft), checked at run time on chosen
call paths; tests/test_import_boundary.py checks the whole import closure statically."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_app_and_lora_gui_do_not_import_torch():
    code = (
        "import sys, app, lora_gui, lora_gui.ui, lora_gui.jobs, lora_gui.presets, lora_gui.engine\n"
        "from lora_gui.ui import build_app\n"
        "from lora_gui.jobs import JobManager\n"
        "from lora_gui import presets, engine\n"
        "from trainer.config import TrainConfig\n"
        "cfg = presets.load_preset('cpu_demo').config\n"
        "build_app(initial=cfg, initial_preset='cpu_demo', manager=JobManager())\n"
        "engine.validate(cfg); engine.dataset_summary(cfg); engine.detect_model(cfg.pretrained_model_name_or_path)\n"
        # the Slider tab's checks and spec, the Utilities tab's command lines and report view
        "from lora_gui import slider_form, tool_args, tool_view, tools_runner\n"
        "from lora_gui.jobs import slider_request\n"
        "values = {n: slider_form.default_value(n) for n in slider_form.FIELDS}\n"
        "values.update(model=cfg.pretrained_model_name_or_path, prompt='x', output_dir='demo/output/slider_check')\n"
        "form = slider_form.build_spec(values, slider_form.pairs_from_rows(['a'], ['demo/img'], ['demo'], 1))\n"
        "slider_request(form.spec)\n"
        "tool_args.build('resize', {'model': 'x.safetensors', 'new_rank': 4, 'save_to': 'y.safetensors'})\n"
        "tool_view.render_result(tools_runner.ToolResult('resize', False, 1.0, exit_code=0, report={}), 'en', table=True)\n"
        "from lora_gui import boundary\n"
        "heavy = [m for m in boundary.HEAVY_MODULES if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
        "assert not heavy, heavy\n"
        "undeclared = [m for m in sys.modules if m.split('.')[0] == 'trainer' and not boundary.is_torch_free(m)]\n"
        "assert not undeclared, f'not declared torch-free in lora_gui/boundary.py: {undeclared}'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "HEAVY []" in proc.stdout
