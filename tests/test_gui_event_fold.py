"""The event fold (lora_gui/run_view.py) is a table with one handler per event type, checked against the
event schema (trainer/events.py EVENT_FIELDS): every type has a handler, and a handler reads only the
fields its type declares (plus `type` and `time`, which every event carries)."""

from __future__ import annotations

from typing import Any

import pytest

from lora_gui.run_view import FOLDS, PARTS, ViewState, fold
from trainer.events import EVENT_FIELDS

# Field values of the right shape for the schema's fields; any other field gets a number.
SHAPED = {"paths": ["a.png", "b.png"], "prompts": ["a red disc"], "files": ["out.safetensors"], "buckets": [[512, 512]],
          "params": {}, "status": "completed", "message": "hello", "code": "some_code", "field": "learning_rate",
          "hint": "a hint", "kind": "lora", "name": "train", "device": "cpu", "config_path": "run.json",
          "path": "out.safetensors", "resources": {"ram_gib": 1.5, "cpu_percent": 100}}


class ReadRecorder(dict):
    """An event that remembers which of its keys were read."""

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return super().__contains__(key)


def synthetic_event(kind: str) -> ReadRecorder:
    fields = {name: SHAPED.get(name, 3) for name in EVENT_FIELDS[kind]}
    return ReadRecorder({"type": kind, "time": 100.0, **fields})


def test_the_table_has_one_handler_per_event_type_of_the_schema():
    assert set(FOLDS) == set(EVENT_FIELDS)


@pytest.mark.parametrize("kind", sorted(EVENT_FIELDS))
def test_each_handler_reads_only_the_fields_its_type_declares(kind):
    event = synthetic_event(kind)
    state = ViewState(status="starting")
    fold(state, event)
    assert event.read - {"type", "time"} <= set(EVENT_FIELDS[kind])
    assert state.events_seen == 1
    assert any(state.versions[p] for p in PARTS), f"a {kind} event changes nothing the page shows"


def test_an_unknown_or_odd_type_is_counted_and_otherwise_ignored():
    state = ViewState(status="running")
    for event in ({"type": "from_a_newer_engine", "step": 5}, {"step": 5}, {"type": ["step"]}, {"type": None}):
        fold(state, event)
    assert state.events_seen == 4
    assert state.step == 0 and state.status == "running"
    assert all(v == 0 for v in state.versions.values())


def test_a_synthetic_run_folds_into_the_view():
    state = ViewState(status="starting")
    for kind in ("start", "stage", "step", "epoch", "sample", "saved", "log", "warning", "error", "done"):
        fold(state, dict(synthetic_event(kind)))
    assert (state.total_steps, state.epochs, state.step, state.device) == (3, 3, 3, "cpu")
    assert state.loss == [(3, 3.0)] and state.epoch_loss == [(3, 3.0)] and state.avg_loss == 3.0
    assert [(s.path, s.prompt) for s in state.samples] == [("a.png", "a red disc"), ("b.png", "")]
    assert [(f.path, f.kind, f.size_bytes) for f in state.saved] == [("out.safetensors", "lora", 3)]
    assert list(state.messages) == [("log", "hello"), ("warning", "hello")]
    assert len(state.warnings) == 1 and len(state.errors) == 1
    assert state.stage == {"name": "train", "index": 3, "count": 3, "kind": "lora", "steps": 3}
    assert (state.status, state.finished_at, state.progress) == ("completed", 100.0, 1.0)
