"""Family traits: torch-free facts per family, read by the form, the pre-flight and the loaders alike."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.config import TrainConfig
from trainer.families.traits import SD1, SD2, SDXL, TRAITS, family_only_fields, family_traits, field_applies

REPO = Path(__file__).resolve().parents[1]
FAMILIES_DIR = REPO / "trainer" / "families"


def test_traits_name_real_config_fields():
    names = set(TrainConfig.field_names())
    for traits in TRAITS.values():
        fields = {*traits.own_fields, *traits.ignored_fields, *traits.text_encoder_switches}
        assert fields <= names, traits.id
        assert set(traits.text_encoder_switches) <= set(traits.own_fields)
        assert len(traits.lora_prefixes) == len(traits.pad_tokens) + 1  # the UNet, then each text encoder
        assert traits.bundled_config_dir.is_dir()


def test_v_prediction_variants_follow_sd_scripts_names():
    assert family_traits("sd2", v_parameterization=True) == family_traits("sd2-v")
    sd2v = family_traits("sd2-v")
    assert (sd2v.default_resolution, sd2v.prediction_type, sd2v.base_model_version, sd2v.modelspec_architecture) == (
        768, "v_prediction", "sd_v2_v", "stable-diffusion-v2-768-v")
    assert family_traits("sd1", True).base_model_version == "sd_v1_v"
    assert family_traits("sdxl", True).base_model_version == SDXL.base_model_version
    with pytest.raises(ValueError):
        family_traits("sd3")


def test_family_only_fields_apply_to_their_family_alone():
    assert set(family_only_fields()) == set(SDXL.own_fields)
    for name in SDXL.own_fields:
        assert field_applies(name, "sdxl")
        assert not any(field_applies(name, family) for family in ("sd1", "sd2", "", None))
    assert field_applies("network_dim", "") and field_applies("clip_skip", "sdxl")


def test_loaded_families_take_their_facts_from_the_traits():
    from trainer.families import get_family
    from trainer.families.model_info import ModelInfo

    for traits in (SD1, SD2, SDXL):
        info = ModelInfo(traits.id, traits.v2, False, "diffusers", "")
        family = get_family(info)
        assert family.traits is traits and family.latent_scale == traits.latent_scale
        assert family.base_model_version(info) == traits.base_model_version
        assert family.modelspec_architecture(info) == traits.modelspec_architecture
        for unused in ("default_resolution", "bucket_reso_steps", "noise_scheduler", "training_target"):
            assert not hasattr(family, unused), unused


def test_traits_and_detection_do_not_import_torch():
    code = ("import sys; import trainer.families.traits, trainer.families.detect, trainer.families.scheduler_config; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def _family_imports(path: Path) -> set[str]:
    """The trainer.families modules `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("trainer.families."):
            found.add(node.module.rsplit(".", 1)[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.rsplit(".", 1)[1] for a in node.names if a.name.startswith("trainer.families.")}
    return found


def test_family_modules_import_each_other_without_a_circle():
    graph = {p.stem: _family_imports(p) for p in FAMILIES_DIR.glob("*.py") if p.stem != "__init__"}

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for name in graph.get(start, ()):
            if name == target or (name not in seen and reaches(name, target, seen | {name})):
                return True
        return False

    circles = sorted(name for name in graph if reaches(name, name, {name}))
    assert circles == [], f"import circle among {circles}"
