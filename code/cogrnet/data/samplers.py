"""Two-stream (labeled + unlabeled) patch batches, a pure function of (seed, iteration).

Every batch is determined by the run seed, the iteration and the rank alone, so a resumed
run draws exactly the batches an uninterrupted one would, and batches can be built ahead of
time in background threads (:class:`Prefetcher`).
"""
from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

import numpy as np

from .transforms import apply_patch_params, sample_patch_params


@lru_cache(maxsize=256)
def _epoch_permutation(seed: int, stream: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, stream, epoch]).permutation(n)


def stream_indices(seed: int, stream: int, first: int, count: int, n_items: int) -> list[int]:
    """Items at positions ``first .. first+count-1`` of an endless stream that walks one fresh
    permutation of ``range(n_items)`` per epoch (the TwoStreamBatchSampler idea)."""
    out = []
    for pos in range(first, first + count):
        epoch, j = divmod(pos, n_items)
        out.append(int(_epoch_permutation(seed, stream, epoch, n_items)[j]))
    return out


@dataclass
class TrainVolume:
    """One training volume: ``image`` ``(X, Y, Z)`` and, for labeled ones, ``targets``
    (same-shaped arrays such as ``label``, ``weight``, ``label_b``)."""

    case_id: str
    image: np.ndarray
    targets: dict[str, np.ndarray] = field(default_factory=dict)


class PatchBatcher:
    """Builds batch ``iteration``: ``labeled_bs`` labeled patches first, then ``unlabeled_bs``
    unlabeled ones. With ``world > 1`` each rank builds its own share of the global batch
    (``labeled_bs``/``unlabeled_bs`` are per rank)."""

    def __init__(self, labeled: Sequence[TrainVolume], unlabeled: Sequence[TrainVolume],
                 patch: Sequence[int], labeled_bs: int, unlabeled_bs: int, seed: int,
                 augment: bool = True, rank: int = 0, world: int = 1):
        if labeled_bs > 0 and not labeled:
            raise ValueError("labeled_bs > 0 but there are no labeled volumes")
        if unlabeled_bs > 0 and not unlabeled:
            raise ValueError("unlabeled_bs > 0 but there are no unlabeled volumes")
        self.labeled, self.unlabeled = list(labeled), list(unlabeled)
        self.patch = tuple(int(p) for p in patch)
        self.labeled_bs, self.unlabeled_bs = labeled_bs, unlabeled_bs
        self.seed, self.augment, self.rank, self.world = seed, augment, rank, world
        self.target_keys = sorted(self.labeled[0].targets) if self.labeled else []

    def _patches(self, vols: Sequence[TrainVolume], stream: int, per_rank: int,
                 iteration: int, with_targets: bool) -> tuple[list, dict[str, list], list[int]]:
        first = (iteration * self.world + self.rank) * per_rank
        idx = stream_indices(self.seed, stream, first, per_rank, len(vols))
        images, targets = [], {k: [] for k in (self.target_keys if with_targets else [])}
        for slot, i in enumerate(idx):
            vol = vols[i]
            # keyed by the stream position: the same patch whatever the number of ranks
            rng = np.random.default_rng([self.seed, stream, first + slot])
            params = sample_patch_params(rng, vol.image.shape, self.patch, self.augment)
            images.append(apply_patch_params(vol.image, params, self.patch))
            for k in targets:
                targets[k].append(apply_patch_params(vol.targets[k], params, self.patch))
        return images, targets, idx

    def batch(self, iteration: int) -> dict[str, np.ndarray]:
        """``image``: float32 ``(B, 1, X, Y, Z)``; each target key: ``(labeled_bs, X, Y, Z)``;
        ``unlabeled_index``: the index in ``unlabeled`` of each unlabeled patch's volume."""
        li, lt, _ = self._patches(self.labeled, 0, self.labeled_bs, iteration, True)
        ui, _, uidx = self._patches(self.unlabeled, 1, self.unlabeled_bs, iteration, False)
        out: dict[str, np.ndarray] = {
            "image": np.stack(li + ui)[:, None].astype(np.float32, copy=False)}
        if uidx:
            out["unlabeled_index"] = np.asarray(uidx, dtype=np.int64)
        for k, v in lt.items():
            out[k] = np.stack(v)
        return out


class Prefetcher:
    """Builds batches ``start, start+1, ...`` in ``workers`` background threads, ``depth``
    ahead; ``get(it)`` returns batch ``it`` and accumulates the time spent waiting."""

    def __init__(self, batcher: PatchBatcher, start: int, workers: int = 2, depth: int = 4):
        self.batcher = batcher
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="patches")
        self.depth = max(1, depth)
        self.pending: dict[int, Future] = {}
        self.next_submit = start
        self.wait_seconds = 0.0
        self._fill(start)

    def _fill(self, it: int) -> None:
        while self.next_submit < it + self.depth:
            self.pending[self.next_submit] = self.pool.submit(self.batcher.batch, self.next_submit)
            self.next_submit += 1

    def get(self, it: int) -> dict[str, np.ndarray]:
        if it not in self.pending:  # a jump (e.g. a new stage): start over from ``it``
            for fut in self.pending.values():
                fut.cancel()
            self.pending.clear()
            self.next_submit = it
        self._fill(it)
        t0 = time.perf_counter()
        batch = self.pending.pop(it).result()
        self.wait_seconds += time.perf_counter() - t0
        self._fill(it + 1)
        return batch

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
