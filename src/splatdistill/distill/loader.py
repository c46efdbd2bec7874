"""The training input pipeline: batch number ``step`` of this rank, decoded in data-loader workers.

A batch is a pure function of (seed, step, rank, world) (:func:`~.distributed.sample_indices` picks the
samples; the sampler draws each from ``(seed, epoch, index)``), so it does not matter which process builds
it or when: a resumed run, a run with 0 or 8 workers, and every rank's shard see the same tensors. The
loader takes its seeds from its own generator, never from the global RNG, which holds dropout's stream
and is saved in checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from splatdistill.data.views import Sample, collate_samples
from splatdistill.distill.distributed import sample_indices
from splatdistill.errors import UserError


class _WorkerUserError:
    """A :class:`UserError` raised in a loader worker, carried back as a value: torch re-raises worker
    exceptions with the worker's traceback folded into the message, which would break the one-line error."""

    def __init__(self, error: UserError):
        self.type, self.message = type(error), str(error)

    def reraise(self):
        error = self.type.__new__(self.type)
        Exception.__init__(error, self.message)
        error.path = None
        raise error


class StepBatches(Dataset):
    """Item ``step``: this rank's collated batch of that step."""

    def __init__(self, dataset, seed: int, batch_size: int, rank: int = 0, world: int = 1):
        self.dataset, self.seed, self.batch_size, self.rank, self.world = dataset, seed, batch_size, rank, world

    def __len__(self) -> int:  # steps are unbounded; the sampler passed to the loader says which ones
        return 2**62

    def __getitem__(self, step: int) -> Sample:
        if torch.utils.data.get_worker_info() is not None:
            try:
                return self.batch(step)
            except UserError as e:
                return _WorkerUserError(e)
        return self.batch(step)

    def batch(self, step: int) -> Sample:
        samples = []
        for epoch, index in sample_indices(len(self.dataset), self.seed, step, self.batch_size, self.rank, self.world):
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            samples.append(self.dataset[index])
        return collate_samples(samples)


def _as_is(item: Sample) -> Sample:
    return item


def step_loader(
    batches: StepBatches, first: int, last: int, workers: int, pin: bool, prefetch: int = 2
) -> Iterator[Sample]:
    """Batches of steps ``first .. last - 1`` in order, built by ``workers`` processes (0: in this one),
    ``prefetch`` batches ahead per worker, pinned when ``pin`` (a CUDA device)."""
    loader = DataLoader(
        batches,
        batch_size=None,
        sampler=range(first, last),
        num_workers=workers,
        collate_fn=_as_is,
        pin_memory=pin,
        persistent_workers=workers > 0,
        prefetch_factor=prefetch if workers > 0 else None,
        generator=torch.Generator().manual_seed(batches.seed),
    )
    for item in loader:
        if isinstance(item, _WorkerUserError):
            item.reraise()
        yield item
