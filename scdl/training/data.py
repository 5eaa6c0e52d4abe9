"""The training data stream: item ``n`` of :class:`StepBatches` is one (micro-)batch of a training step.

Every patch is a pure function of (seed, step, sample index): which case, where to crop, how to augment.
So the stream is the same with 0 or 4 loader workers, a resumed run continues it exactly from the saved
step (the sampler state is one integer), and ``W`` distributed processes with per-process batch ``b`` draw
exactly the patches of one process with batch ``W·b`` (process ``r`` takes samples ``r·b .. r·b + b - 1``).
With gradient accumulation over ``A`` micro-batches, item ``n`` is micro-batch ``n % A`` of step ``n // A``
and takes the samples of "virtual process" ``r·A + n % A``: one process accumulating ``A`` micro-batches of
``b`` sees exactly what ``A`` distributed processes with batch ``b`` see.

Cases of a step are drawn without replacement when the cohort has enough of them (one permutation per
step), so the labeled patches of a batch come from different CTs as in the authors' two-stream sampler.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from scdl.training.augment import Augmenter
from scdl.training.cache import CachedCase
from scdl.training.sampling import sample_patch

_LABELED, _UNLABELED = 0, 1


class InfiniteSampler(Sampler[int]):
    """Yields ``start, start + 1, ...`` forever: the step indices. Its state is ``start``."""

    def __init__(self, start: int = 0):
        self.start = int(start)

    def __iter__(self) -> Iterator[int]:
        i = self.start
        while True:
            yield i
            i += 1


def _case_order(n_cases: int, n_samples: int, seed: int, step: int, stream: int) -> np.ndarray:
    """Case index of each of the ``n_samples`` global samples of a step (distinct when there are enough)."""
    rng = np.random.default_rng([seed, step, stream, 0xCA5E])
    if n_cases >= n_samples:
        return rng.permutation(n_cases)[:n_samples]
    return rng.integers(0, n_cases, size=n_samples)


class StepBatches(Dataset):
    """Map-style dataset: ``batches[n]`` -> the patches of micro-batch ``n % A`` of step ``n // A`` for this process.

    Args:
        labeled / unlabeled: cached training cases (unlabeled may be empty for supervised training).
        patch: patch size (D, H, W).
        labeled_batch / unlabeled_batch: patches per step and process.
        class_prob: probability of a class-centred patch (see scdl.training.sampling).
        augment: the ``augment`` config block.
        seed: run seed. rank / world_size: this process among the distributed ones.
        accumulate: micro-batches per step A (gradient accumulation; 1 = none).
        synth: the ``synth`` config block (scdl.synth.engine.SYNTH_DEFAULTS): how anatomy cases (label maps
            without image) are synthesised, anew for every patch.
        unlabeled_from_labeled: for semi-supervised runs without unlabeled CTs, unlabeled patches are cut from
            the labeled cases (labels ignored). Off by default (the cohort check asks for unlabeled cases).
        annotated: per labeled case, a bool (C,) array of the classes it annotates (column 0 True), or None for
            a cohort where every case annotates every class. With it, each item carries
            ``"labeled_annotated"`` bool (Bl, C), and voxels of a class a case does not annotate are 0 in its
            labels (unknown: the partial-label losses merge them with background, scdl.losses.partial).
        small_classes / small_prob: small-organ sampling (scdl.training.sampling.choose_start).
        zoom_prob / zoom_range: in-plane zoom of a share of the patches (scdl.training.sampling.draw_zoom).
    Item: ``{"labeled_image": float32 (Bl, 1, D, H, W), "labeled_label": int64 (Bl, D, H, W),
    "unlabeled_image": float32 (Bu, 1, D, H, W), "step": int, "centre_classes": int64 (Bl,)}``
    (centre class -1 = random crop).
    """

    def __init__(self, labeled: Sequence[CachedCase], unlabeled: Sequence[CachedCase], patch: Sequence[int],
                 labeled_batch: int, unlabeled_batch: int, class_prob: float, augment: Mapping[str, Any],
                 seed: int, rank: int = 0, world_size: int = 1, pad_value: float = 0.0,
                 unlabeled_from_labeled: bool = False, accumulate: int = 1,
                 synth: Optional[Mapping[str, Any]] = None,
                 annotated: Optional[Sequence[np.ndarray]] = None,
                 small_classes: Sequence[int] = (), small_prob: float = 0.0,
                 zoom_prob: float = 0.0, zoom_range: Sequence[float] = (1.0, 1.0)):
        self.labeled = list(labeled)
        self.zoom_prob, self.zoom_range = float(zoom_prob), tuple(float(v) for v in zoom_range)
        self.small_classes, self.small_prob = tuple(int(c) for c in small_classes), float(small_prob)
        self.annotated = None if annotated is None else [np.asarray(a, dtype=bool) for a in annotated]
        if self.annotated is not None and len(self.annotated) != len(self.labeled):
            raise ValueError(f"{len(self.annotated)} annotation masks for {len(self.labeled)} labeled cases")
        self.unlabeled = list(unlabeled) if unlabeled or not unlabeled_from_labeled else list(labeled)
        self.patch = tuple(int(p) for p in patch)
        self.labeled_batch, self.unlabeled_batch = int(labeled_batch), int(unlabeled_batch)
        self.class_prob = float(class_prob)
        self.augmenter = Augmenter(augment)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.accumulate = max(int(accumulate), 1)
        self.pad_value = float(pad_value)
        self.synth = dict(synth or {})
        if not self.labeled:
            raise ValueError("no labeled training case")
        if self.unlabeled_batch and not self.unlabeled:
            raise ValueError("unlabeled patches requested but no unlabeled case")

    def __len__(self) -> int:  # the stream is endless; DataLoader only needs a length for its own bookkeeping
        return 2**62

    def _stream(self, cases: Sequence[CachedCase], per_rank: int, step: int, micro: int, stream: int,
                with_labels: bool):
        total = per_rank * self.world_size * self.accumulate
        order = _case_order(len(cases), total, self.seed, step, stream)
        chunk = self.rank * self.accumulate + micro
        images, labels, centres, masks = [], [], [], []
        for k in range(per_rank):
            j = chunk * per_rank + k                # global sample index: same patch for any world size
            rng = np.random.default_rng([self.seed, step, stream, j])
            case = cases[int(order[j])]
            image, label, cls = sample_patch(case, self.patch, rng, self.class_prob if with_labels else 0.0,
                                             self.pad_value, self.synth, self.small_classes, self.small_prob,
                                             self.zoom_prob, self.zoom_range)
            image, label = self.augmenter(image, label if with_labels else None, int(rng.integers(2**31)))
            images.append(image[None])
            if with_labels:
                if self.annotated is not None:
                    mask = self.annotated[int(order[j])]
                    label = np.where(mask[np.clip(label, 0, len(mask) - 1)], label, 0)   # unknown -> merged bg
                    masks.append(mask)
                labels.append(label)
            centres.append(-1 if cls is None else cls)
        return images, labels, centres, masks

    def __getitem__(self, index: int) -> dict[str, Any]:
        step, micro = divmod(int(index), self.accumulate)
        images, labels, centres, masks = self._stream(self.labeled, self.labeled_batch, step, micro, _LABELED, True)
        out = {"step": step, "micro": micro,
               "labeled_image": torch.from_numpy(np.stack(images)),
               "labeled_label": torch.from_numpy(np.stack(labels).astype(np.int64)),
               "centre_classes": torch.tensor(centres, dtype=torch.int64)}
        if self.annotated is not None:
            out["labeled_annotated"] = torch.from_numpy(np.stack(masks))
        if self.unlabeled_batch:
            u_images, _, _, _ = self._stream(self.unlabeled, self.unlabeled_batch, step, micro, _UNLABELED, False)
            out["unlabeled_image"] = torch.from_numpy(np.stack(u_images))
        else:
            out["unlabeled_image"] = torch.zeros((0, 1, *self.patch), dtype=torch.float32)
        return out


def _worker_init(_worker_id: int) -> None:
    # Each loader process crops and augments with one thread: the cores belong to the network.
    torch.set_num_threads(1)


def make_loader(dataset: StepBatches, start_step: int, num_workers: int, prefetch_factor: int = 2,
                pin_memory: bool = False, multiprocessing_context: Optional[str] = None, seed: int = 0) -> DataLoader:
    """A DataLoader over the (micro-)batches of steps ``start_step, start_step + 1, ...`` (persistent workers
    when num_workers > 0).

    The loader gets its own generator: creating it must not draw from torch's global generator, or a resumed
    run (which creates its loader at the resume point) would drift from an uninterrupted one.
    """
    kwargs: dict[str, Any] = {"generator": torch.Generator().manual_seed(int(seed))}
    if num_workers > 0:
        kwargs.update(persistent_workers=True, prefetch_factor=max(int(prefetch_factor), 1),
                      worker_init_fn=_worker_init)
        if multiprocessing_context:
            kwargs["multiprocessing_context"] = multiprocessing_context
    start = int(start_step) * dataset.accumulate
    return DataLoader(dataset, batch_size=None, sampler=InfiniteSampler(start), num_workers=int(num_workers),
                      pin_memory=pin_memory, **kwargs)
