"""Every TrainConfig field does something: the engine reads it, or it is in the one allow-list of fields
that do nothing yet (trainer.unused_fields), which the page marks as not used yet."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from lora_gui import i18n
from trainer.config import TrainConfig
from trainer.unused_fields import NOT_USED_YET

ROOT = Path(__file__).resolve().parent.parent
# Where fields are defined, checked or mapped rather than used: a read there does not make a field work.
NOT_ENGINE_USE = ("trainer/params.py", "trainer/validation.py", "trainer/kohya_import.py", "trainer/unused_fields.py",
                  "trainer/preflight/", "trainer/slider/spec.py", "trainer/tools/options.py")


def _engine_files() -> list[Path]:
    return [p for p in sorted((ROOT / "trainer").rglob("*.py"))
            if not p.relative_to(ROOT).as_posix().startswith(NOT_ENGINE_USE)]


def engine_reads() -> set[str]:
    """Fields the engine reads: `<obj>.<field>` anywhere in it, or the field's name as a string (getattr and
    tables such as the family traits' field lists), except config.py's own strings (its field checks)."""
    found: set[str] = set()
    for path in _engine_files():
        in_config = path.name == "config.py" and path.parent.name == "trainer"
        found |= reads_in(path.read_text(encoding="utf-8"), strings_count=not in_config)
    return found


def reads_in(source: str, *, strings_count: bool = True) -> set[str]:
    names = set(TrainConfig.field_names())
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) and node.attr in names:
            found.add(node.attr)
        elif isinstance(node, ast.Constant) and node.value in names and strings_count:
            found.add(node.value)
    return found


def test_every_field_is_read_by_the_engine_or_listed_as_not_used_yet():
    unread = set(TrainConfig.field_names()) - engine_reads() - set(NOT_USED_YET)
    assert not unread, (f"no engine code reads {sorted(unread)}: make them work, or list them in "
                        "trainer/unused_fields.py NOT_USED_YET with the issue that makes them real")


def test_the_allow_list_names_real_fields_and_the_work_that_makes_them_real():
    fields = set(TrainConfig.field_names())
    for name, why in NOT_USED_YET.items():
        assert name in fields, name
        assert "issue" in why, (name, why)


@pytest.mark.parametrize("lang", ["en", "ja"])
@pytest.mark.parametrize("name", sorted(NOT_USED_YET))
def test_fields_not_used_yet_say_so_on_the_page(name, lang):
    marker = i18n.t("field.not_used_yet", lang, help="")
    assert marker.strip() and i18n.field_help(name, lang).endswith(marker)


def test_fields_that_work_are_not_marked():
    marker = i18n.t("field.not_used_yet", "en", help="")
    assert not i18n.field_help("learning_rate", "en").endswith(marker)


def test_the_scanner_sees_reads_and_nothing_else():
    assert {"learning_rate", "network_dim", "output_name", "logging_dir"} <= engine_reads()
    source = ("def f(cfg):\n    cfg.seed = 3  # a write, and network_dim in a comment\n"
              "    return cfg.learning_rate, getattr(cfg, 'clip_skip')\n")
    assert reads_in(source) == {"learning_rate", "clip_skip"}
    assert reads_in(source, strings_count=False) == {"learning_rate"}
