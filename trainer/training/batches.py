"""Batch sources of the training core: the planned batches of an epoch, each split over the processes.

A global batch holds `train_batch_size` images per process (the step plan is made with that size, so the
page's step count is the count that runs). Process r takes images [r*B, (r+1)*B) of it; a bucket's last
batch may leave a process with fewer or none (`Batch.data` is then None), and the loss divides by the
global batch size, so any split gives the one-process result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Optional, Protocol

import torch

from trainer.data.dataset import LoraDataset


@dataclass(frozen=True)
class Shard:
    rank: int  # this process
    count: int  # processes
    per_process: int  # train_batch_size

    def local(self, items: list[Any]) -> tuple[int, list[Any]]:
        """(offset, this process's items) of a global batch."""
        start = self.rank * self.per_process
        return start, list(items[start:start + self.per_process])


@dataclass
class Batch:
    index: int  # position in the epoch
    size: int  # images (or pairs) in the whole batch, over all processes
    offset: int  # where this process's slice starts in it
    data: Optional[dict[str, Any]]  # this process's slice; None when it has nothing of this batch
    global_items: list[Any]  # the whole batch's sample ids (or pairs): what every process draws noise for
    bucket: tuple[int, int] = (0, 0)  # (width, height) of the batch's images


class Plan(Protocol):
    total_steps: int
    epochs: int
    steps_per_epoch: int
    batches_per_epoch: int
    gradient_accumulation_steps: int


class BatchSource(Protocol):
    plan: Plan

    def count(self, epoch: int) -> int:
        """Batches in `epoch`."""

    def iterate(self, epoch: int, start: int) -> Iterator[Batch]:
        """The batches of `epoch` from index `start` on."""


class _EpochKeys(torch.utils.data.Sampler):
    """The keys the DataLoader loads, set before each epoch (a persistent worker keeps its dataset copy
    and gets the keys from this sampler, which runs in the main process)."""

    def __init__(self) -> None:
        self.keys: list[tuple[int, tuple[int, ...]]] = []

    def __iter__(self):
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


class _BatchLoader(torch.utils.data.Dataset):
    """Maps a key (epoch, sample ids) to a loaded batch, or None for no ids; stateless, so any worker can
    load any batch (every augmentation is seeded by epoch and sample id)."""

    def __init__(self, dataset: LoraDataset):
        self.dataset = dataset

    def __getitem__(self, key: tuple[int, tuple[int, ...]]) -> Optional[dict]:
        epoch, indices = key
        return self.dataset.load_batch(list(indices), epoch) if indices else None


def _identity(x: Any) -> Any:
    return x


class DatasetBatches:
    """The LoRA dataset's planned batches through one torch DataLoader for the whole run:
    `max_data_loader_n_workers` workers (0: the main process), kept between epochs when
    `persistent_data_loader_workers`, pinned memory on CUDA."""

    def __init__(self, dataset: LoraDataset, shard: Shard, *, workers: int, persistent: bool, pin_memory: bool):
        self.dataset, self.shard, self.plan = dataset, shard, dataset.plan
        self._keys = _EpochKeys()
        self._loader = torch.utils.data.DataLoader(
            _BatchLoader(dataset), batch_size=None, sampler=self._keys, num_workers=workers,
            collate_fn=_identity, pin_memory=pin_memory, persistent_workers=persistent and workers > 0)

    def count(self, epoch: int) -> int:
        return len(self.dataset.batches(epoch))

    def iterate(self, epoch: int, start: int) -> Iterator[Batch]:
        batches = self.dataset.batches(epoch)[start:]
        slices = [self.shard.local(b) for b in batches]
        self._keys.keys = [(epoch, tuple(ids)) for _, ids in slices]
        for i, (data, (offset, _)) in enumerate(zip(self._loader, slices)):
            bucket = self.plan.sample_image(batches[i][0]).bucket
            yield Batch(start + i, len(batches[i]), offset, data, batches[i], bucket)
