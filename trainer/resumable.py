"""The state folders a run can be resumed from, found in an output folder (torch-free: the page lists them).

A state folder is `<run name>[-stopped[-N] | -NNNNNN | -stepNNNNNNNN]-state` holding `train_state.json` (the
position: steps done, epoch) beside the tensors (trainer/training/state.py writes it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

STATE_FILE = "train_state.json"
# What a run appends to its output name for its saves (trainer/training/checkpoint.py RunFiles): an epoch
# (-000002), a step (-step00000500), a stop (-stopped, then -stopped-2 ... when stopped again); the final
# save has none.
SAVE_SUFFIX = r"-\d{6}|-step\d{8}|-stopped(?:-\d+)?"
_STATE_DIR = re.compile(rf"^(?P<name>.+?)(?P<kind>{SAVE_SUFFIX})?-state$")


@dataclass(frozen=True)
class ResumableState:
    path: Path
    run_name: str  # the output name of the run it belongs to
    kind: str  # "stopped", "epoch", "step" or "final"
    step: int  # optimizer steps done
    epoch: int  # the (1-based) epoch it was saved in
    modified: float

    @property
    def run_config(self) -> Path:
        """The settings of the run it belongs to (the engine writes `<name>.json` beside its files)."""
        return self.path.parent / f"{self.run_name}.json"


def find_resumable_states(output_dir: str | Path) -> list[ResumableState]:
    """Every readable state folder of `output_dir`, newest first; [] for a folder that cannot be read."""
    states = []
    try:
        folders = [p for p in Path(output_dir).expanduser().iterdir() if p.is_dir()]
    except OSError:
        return []
    for folder in folders:
        match = _STATE_DIR.match(folder.name)
        record = folder / STATE_FILE
        if match is None or not record.is_file():
            continue
        try:
            position = json.loads(record.read_text(encoding="utf-8"))
            step, epoch = int(position["global_step"]), int(position["epoch"])
            modified = record.stat().st_mtime
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not ours, or damaged: the engine names the problem if someone resumes it anyway
        suffix = match["kind"] or ""
        kind = ("stopped" if suffix.startswith("-stopped") else "step" if suffix.startswith("-step") else
                "epoch" if suffix else "final")
        states.append(ResumableState(folder, match["name"], kind, step, epoch + 1, modified))
    return sorted(states, key=lambda s: s.modified, reverse=True)
