"""LoRA toolbox: inspect, merge (exact), svd_merge, resize, extract — kohya-format files.

Library use (each returns the new `LoraFile` plus a `ToolReport`; the *_file variants read and
write files and return the report):

    from trainer.tools import resize_lora, resize_file
    report = resize_file("in.safetensors", "out.safetensors", 8, dynamic_method="sv_fro", dynamic_param=0.9)
    for m in report.modules: print(m.name, m.rank, m.fro_retained)

CLI: python -m trainer.tools --help (sd-scripts flag names). See docs/TOOLS.md.
Submodules are imported lazily so that `import trainer.tools` does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from trainer.tools.errors import ToolError

_EXPORTS = {
    "resize_lora": "trainer.tools.resize",
    "resize_file": "trainer.tools.resize",
    "merge_loras": "trainer.tools.merge",
    "merge_files": "trainer.tools.merge",
    "svd_merge_loras": "trainer.tools.merge",
    "svd_merge_files": "trainer.tools.merge",
    "extract_lora": "trainer.tools.extract",
    "extract_files": "trainer.tools.extract",
    "load_module_weights": "trainer.tools.extract",
    "merge_into_model": "trainer.tools.merge_checkpoint",
    "merge_into_model_file": "trainer.tools.merge_checkpoint",
    "load_base_model": "trainer.tools.models",
    "module_weights": "trainer.tools.models",
    "inspect_lora": "trainer.tools.inspect_lora",
    "inspect_file": "trainer.tools.inspect_lora",
    "select_rank": "trainer.tools.lowrank",
    "ToolReport": "trainer.tools.report",
    "ModuleChange": "trainer.tools.report",
    "InspectReport": "trainer.tools.report",
    "ModuleInfo": "trainer.tools.report",
}

__all__ = ["ToolError", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'trainer.tools' has no attribute {name!r}")
