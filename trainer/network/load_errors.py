"""The message when saved LoRA weights do not fit the network: which field brought them in (Network
weights or Resume), which rank setting differs, and both ranks."""

from __future__ import annotations

from dataclasses import dataclass

from trainer.errors import TrainingError

RANK_LABELS = {"network_dim": "Network Rank (network_dim)", "conv_dim": "Convolution Rank (conv_dim)"}
SOURCE_LABELS = {"network_weights": "the LoRA file in Network weights", "resume": "the saved training state in Resume"}


@dataclass(frozen=True)
class ShapeMismatch:
    name: str
    file_rank: int
    network_rank: int
    rank_field: str  # the setting that decides this module's rank: network_dim, or conv_dim for 3x3 convs
    file_shape: tuple[int, ...]
    network_shape: tuple[int, ...]

    @classmethod
    def of(cls, name: str, src, dst) -> "ShapeMismatch":
        """`src`: the file's LoraModule; `dst`: the network's module (with lora_down / lora_up layers)."""
        down = dst.lora_down.weight
        conv3x3 = down.ndim == 4 and down.shape[-1] > 1
        return cls(name, int(src.rank), int(dst.rank), "conv_dim" if conv3x3 else "network_dim",
                   tuple(src.down.shape), tuple(down.shape))


def shape_mismatch_error(mismatched: list[ShapeMismatch], source_field: str, source: str) -> TrainingError:
    """One TrainingError for every module that differs, on `source_field`, naming the rank to set."""
    first = next((m for m in mismatched if m.file_rank != m.network_rank), mismatched[0])
    where = SOURCE_LABELS.get(source_field, source_field) + (f" ({source})" if source else "")
    code = "resume_state_mismatch" if source_field == "resume" else "network_weights_mismatch"
    undo = "clear Resume to start a new run" if source_field == "resume" else "choose a file trained with these ranks"
    params = {"path": source, "module": first.name, "modules": len(mismatched), "rank_field": first.rank_field,
              "saved_rank": first.file_rank, "network_rank": first.network_rank}
    if first.file_rank == first.network_rank:  # same rank, other layer sizes: another base model
        return TrainingError(
            code, f"The weights of {where} do not fit this model: {len(mismatched)} module(s) differ in shape, "
                  f"e.g. {first.name} is {first.file_shape} there and {first.network_shape} here.",
            field=source_field, params=params,
            hint=f"Use the base model those weights were trained on, or {undo}.")
    label = RANK_LABELS[first.rank_field]
    return TrainingError(
        code, f"The weights of {where} have rank {first.file_rank}, but {label} is {first.network_rank} "
              f"({len(mismatched)} module(s) differ, e.g. {first.name}).",
        field=source_field, params=params,
        hint=f"Set {label} to {first.file_rank} (as when they were saved), or {undo}.")
