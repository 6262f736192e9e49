"""The web process's import boundary, declared once (tests/test_import_boundary.py checks it statically,
tests/test_gui_no_torch.py at run time).

The web process (app.py, lora_gui/) never imports torch. It reaches the engine's code in two ways only:
- the shared definitions below, which any web module may import (the parameter definitions the forms
  are generated from, the family traits, the event protocol, the finding type, atomic file writes);
- every other engine module through one gateway, lora_gui/engine.py.
Everything the web process can reach, module-level and lazy imports alike, must be listed in TORCH_FREE.
"""

from __future__ import annotations

GATEWAY = "lora_gui.engine"

# Engine modules any web module may import directly.
SHARED_DEFINITIONS = (
    "trainer.config",
    "trainer.params",
    "trainer.unused_fields",
    "trainer.findings",
    "trainer.events",
    "trainer.fileio",
    "trainer.families.traits",
    "trainer.slider.spec",
    "trainer.tools.options",
)

# Engine modules that import no torch (and nothing heavy): a name covers that module only, a name ending
# in ".*" also every module of that package.
TORCH_FREE = (
    "trainer",
    "trainer.config",
    "trainer.settings.*",
    "trainer.params",
    "trainer.unused_fields",
    "trainer.findings",
    "trainer.events",
    "trainer.errors",
    "trainer.fileio",
    "trainer.machine",
    "trainer.prompts",
    "trainer.resumable",
    "trainer.kohya_import",
    "trainer.validation",
    "trainer.preflight.*",
    "trainer.distributed",
    "trainer.data",
    "trainer.data.buckets",
    "trainer.data.captions",
    "trainer.data.image_header",
    "trainer.data.image_modes",
    "trainer.data.latent_cache",
    "trainer.data.masks",
    "trainer.data.scan",
    "trainer.data.steps",
    "trainer.families",
    "trainer.families.detect",
    "trainer.families.model_info",
    "trainer.families.traits",
    "trainer.slider",
    "trainer.slider.checks",
    "trainer.slider.files",
    "trainer.slider.images",
    "trainer.slider.spec",
    "trainer.slider.stages",
    "trainer.tools",
    "trainer.tools.errors",
    "trainer.tools.options",
    "trainer.training",
    "trainer.training.optimizer_args",
)

# Lazy imports inside torch-free modules that lead into the engine proper: functions the web process
# never calls. (importing module, imported module) -> why it stays out of the web process.
ENGINE_ONLY_IMPORTS = {
    ("trainer.families", "trainer.families.sd"): "get_family(): the engine loads a model",
    ("trainer.families", "trainer.families.sdxl"): "get_family(): the engine loads a model",
    ("trainer.families.detect", "trainer.families.single_file"): "resolve_model_info() reads a .ckpt: the engine",
}

# Third-party modules the web process must never load.
HEAVY_MODULES = ("torch", "torchvision", "diffusers", "transformers", "peft", "accelerate", "safetensors.torch",
                 "lycoris", "bitsandbytes")


def is_torch_free(module: str) -> bool:
    """Whether `module` is declared in TORCH_FREE."""
    return any(module == name or (name.endswith(".*") and (module == name[:-2] or module.startswith(name[:-1])))
               for name in TORCH_FREE)
