"""Weight averaging of the segmentation networks: over the end of a run (``averaging`` settings) and, for a
fine-tune, between the initial and the fine-tuned weights (``finetune.interpolate``).

Stochastic Weight Averaging (Izmailov et al., "Averaging Weights Leads to Wider Optima and Better
Generalization", UAI 2018) and model soups (Wortsman et al., ICML 2022): the mean of the weights a run passes
through late in its schedule often generalises better than any single one of them. With ``averaging.enabled``
the networks' weights at every checkpoint iteration (``checkpoint_every``) from ``averaging.start`` x iterations
on, and at the last iteration, join a running mean. At the end of a finished run the trainer validates the mean
like a checkpoint: it becomes the best (``best.pt``, ``best["averaged"]``) when its mean Dice beats the best
checkpoint's; without validation (``validation.every`` -1) the mean is packaged instead of the last weights.

Batch-norm running statistics are averaged like the weights (SWA recomputes them with a pass over the training
data; averaging them is what was measured for the default model, docs/default_model.md). Integer buffers (the
batches-tracked counters) take the newest value. The mean is part of ``checkpoint.pt`` (an exact resume).
Paper default: off (the SCDL paper does not average weights).

Fine-tuning (``--init``): :func:`interpolate_state_dicts` mixes the initial model's weights with the fine-tuned
ones, ``(1 - a) * initial + a * fine-tuned`` with ``a = finetune.interpolate`` (WiSE-FT: Wortsman et al.,
"Robust fine-tuning of zero-shot models", CVPR 2022): most of the gain on what the fine-tuning cases draw, less
drift on what they do not (measured with bench/finetune_protocol.py, docs/training.md). Output-layer rows of
classes the initial model does not have keep their fine-tuned values.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import Tensor


def average_state_dicts(states: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """The mean of same-shaped state dicts (floating tensors averaged in float64, returned in their dtype;
    other tensors from the last state). Raises ValueError on an empty list or different keys/shapes."""
    if not states:
        raise ValueError("no state dicts to average")
    keys = list(states[-1].keys())
    for state in states:
        if list(state.keys()) != keys:
            raise ValueError("the state dicts have different keys")
    out: dict[str, Tensor] = {}
    for key in keys:
        last = states[-1][key]
        if any(s[key].shape != last.shape for s in states):
            raise ValueError(f"{key}: the state dicts have different shapes")
        if last.is_floating_point():
            total = torch.zeros(last.shape, dtype=torch.float64, device=last.device)
            for state in states:
                total += state[key].detach().to(torch.float64)
            out[key] = (total / len(states)).to(last.dtype)
        else:
            out[key] = last.detach().clone()
    return out


def interpolate_state_dicts(start: Mapping[str, Tensor], tuned: Mapping[str, Tensor], alpha: float, *,
                            head_keys: Sequence[str] = (), head_rows: Optional[Sequence[int]] = None
                            ) -> dict[str, Tensor]:
    """``(1 - alpha) * start + alpha * tuned`` for every floating tensor (computed in float64, returned in
    ``tuned``'s dtype); other tensors from ``tuned``. For ``head_keys`` only the rows ``head_rows`` (output
    channels the start model has) are mixed, the other rows stay ``tuned``'s (None: every row mixed)."""
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha {alpha!r} is not in [0, 1]")
    if set(start) != set(tuned):
        raise ValueError("the state dicts have different keys")
    a = float(alpha)
    out: dict[str, Tensor] = {}
    for key, value in tuned.items():
        ref = start[key]
        if ref.shape != value.shape:
            raise ValueError(f"{key}: shapes {tuple(ref.shape)} and {tuple(value.shape)} differ")
        if not value.is_floating_point():
            out[key] = value.detach().clone()
            continue
        tuned64 = value.detach().to(device=ref.device, dtype=torch.float64)     # on the start's device (CPU)
        mixed = (1.0 - a) * ref.detach().to(torch.float64) + a * tuned64
        if key in head_keys and head_rows is not None:
            keep = torch.ones(value.shape[0], dtype=torch.bool, device=ref.device)
            keep[[int(r) for r in head_rows if 0 <= int(r) < value.shape[0]]] = False
            mixed[keep] = tuned64[keep]
        out[key] = mixed.to(dtype=value.dtype, device=value.device)
    return out


class WeightAverage:
    """The running mean of the networks' weights at the iterations :meth:`due` names (see module docstring).

    Args:
        start: the fraction of the run after which checkpoints join the mean (0: from the first checkpoint).
        every: the checkpoint interval (``checkpoint_every``): the iterations that join.
        total: the run's iteration count (the last iteration always joins).
    """

    def __init__(self, *, start: float, every: int, total: int):
        self.total = int(total)
        self.every = max(int(every), 1)
        self.first = int(math.ceil(float(start) * self.total))   # the first iteration that may join
        self.iterations: list[int] = []                          # those that joined, in order
        self._mean: Optional[list[dict[str, Tensor]]] = None     # one float64 state per network (CPU)

    @property
    def count(self) -> int:
        return len(self.iterations)

    def due(self, iteration: int) -> bool:
        """``iteration`` joins the mean: a checkpoint iteration (or the last) at or after :attr:`first`."""
        iteration = int(iteration)
        return (iteration >= max(self.first, 1) and (iteration % self.every == 0 or iteration == self.total)
                and iteration not in self.iterations)

    def add(self, iteration: int, networks: Sequence[Mapping[str, Tensor]]) -> None:
        """Add the networks' state dicts of ``iteration`` to the running mean."""
        n = self.count + 1
        states = [{k: v.detach().to("cpu") for k, v in net.items()} for net in networks]
        if self._mean is None:
            self._mean = [{k: (v.to(torch.float64) if v.is_floating_point() else v.clone()) for k, v in s.items()}
                          for s in states]
        else:
            if len(states) != len(self._mean):
                raise ValueError(f"{len(states)} networks, the mean holds {len(self._mean)}")
            for mean, state in zip(self._mean, states):
                for key, value in state.items():
                    if value.is_floating_point():
                        mean[key] += (value.to(torch.float64) - mean[key]) / n
                    else:
                        mean[key] = value.clone()
        self.iterations.append(int(iteration))

    def networks(self, like: Sequence[Mapping[str, Tensor]]) -> list[dict[str, Tensor]]:
        """The mean as state dicts with the dtypes and devices of ``like`` (the networks' own state dicts)."""
        if self._mean is None:
            raise ValueError("no weights were averaged yet")
        return [{k: mean[k].to(dtype=ref[k].dtype, device=ref[k].device) for k in ref}
                for mean, ref in zip(self._mean, like)]

    def summary(self) -> dict[str, Any]:
        """What the mean is made of (``best["averaged"]``, the card)."""
        its = self.iterations
        return {"count": self.count, "first": its[0] if its else None, "last": its[-1] if its else None}

    # -- checkpoint.pt -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"iterations": list(self.iterations), "first": self.first, "every": self.every,
                "mean": None if self._mean is None else [dict(m) for m in self._mean]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.iterations = [int(i) for i in state.get("iterations") or []]
        mean = state.get("mean")
        self._mean = None if mean is None else [{k: v.clone() for k, v in m.items()} for m in mean]
