"""Batches in which no location appears twice, the same on every DDP rank.

InfoNCE treats every other item of a batch as a negative; two items of one location in a batch
would be false negatives. Each epoch every rank draws the same global list of batches (the seed
and the epoch decide it) and keeps every ``world_size``-th one, so shards are disjoint and every
rank runs the same number of steps. Usable as ``DataLoader(dataset, batch_sampler=...)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from geolink_edge.errors import GeolinkError


class UniqueLocationBatchSampler:
    def __init__(
        self,
        labels: Sequence[int],
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ) -> None:
        if batch_size < 1:
            raise GeolinkError(f"batch size must be at least 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise GeolinkError(f"rank {rank} is not in a world of size {world_size}")
        self.labels = np.asarray(labels, dtype=np.int64)
        n_locations = len(np.unique(self.labels))
        if n_locations < batch_size:
            raise GeolinkError(
                f"a batch of {batch_size} needs {batch_size} distinct locations; "
                f"the dataset has {n_locations}"
            )
        self.batch_size, self.seed, self.drop_last = batch_size, seed, drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _global_batches(self) -> list[list[int]]:
        """Draw locations with probability proportional to their unused items, without replacement
        within a batch, so that large locations are spread over the whole epoch and few items are
        left over at its end."""
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, self.epoch])
        groups = [
            rng.permutation(np.flatnonzero(self.labels == lab)).tolist() for lab in np.unique(self.labels)
        ]
        remaining = np.array([len(g) for g in groups], dtype=np.float64)
        batches: list[list[int]] = []
        while True:
            available = int((remaining > 0).sum())
            size = min(self.batch_size, available)
            if size == 0 or (size < self.batch_size and self.drop_last):
                break
            picks = rng.choice(len(groups), size=size, replace=False, p=remaining / remaining.sum())
            batches.append([groups[g].pop() for g in picks])
            remaining[picks] -= 1
        usable = len(batches) - len(batches) % self.world_size
        self._cache = (self.epoch, batches[:usable])
        return self._cache[1]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._global_batches()[self.rank :: self.world_size]

    def __len__(self) -> int:
        return len(self._global_batches()) // self.world_size
