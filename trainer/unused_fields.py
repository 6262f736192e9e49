"""TrainConfig fields that are accepted (presets and kohya_ss configs keep loading) but change nothing yet.

The one allow-list: tests/test_config_fields_used.py fails for any other field the engine never reads,
and the page marks each field listed here as "not used yet" (lora_gui.i18n.field_help). Each entry names
the work that makes the field real; remove the entry with it. Torch-free.
"""

from __future__ import annotations

NOT_USED_YET: dict[str, str] = {
}
