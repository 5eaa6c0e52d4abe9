"""The "keep what you know" term of a fine-tuning step: the frozen initial model teaches what the labels do not.

A pluggable term of the one training step (``TrainingStep.add_term``, scdl/training/step.py): it holds a frozen
copy of the initial model's networks (eval mode, no gradient; their batch-norm statistics never change) and adds
``weight · Σ_i keep_distillation_loss(logits_i, teacher, ...)`` over the trained networks i, the loss of
:mod:`scdl.losses.keep` (Li & Hoiem 2017, Learning without Forgetting; MiB's background-merged, "unbiased"
distillation, Cermelli et al. CVPR 2020; see there). Where it distils:

- a labeled patch: the voxels labeled 0 (background or a class the case does not annotate); the classes the
  patch annotates are merged into background, the others are taught by the initial model;
- an unlabeled patch: every voxel; the classes that some labeled training case annotates are merged into
  background (the labels teach them), the others are taught by the initial model.

The Trainer adds it with ``--init`` when some labeled case leaves a class not annotated and
``finetune.keep_weight`` > 0 (docs/training.md, "Keep what you know"); its networks are part of the step's
state (checkpoints hold them, so a resume needs no init model).
"""

from __future__ import annotations

import copy
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from scdl.losses.keep import keep_distillation_loss

__all__ = ["KeepKnowledge"]


class KeepKnowledge(nn.Module):
    """Distillation from a frozen initial model on the classes a patch does not annotate.

    Args:
        teachers: the initial model's networks (copied, frozen, kept in eval mode).
        cohort_taught: (C,) bool, classes some labeled training case annotates (background True): merged into
            background on unlabeled patches.
        weight: multiplies the term (``finetune.keep_weight``); 0 computes nothing.
        temperature: T of the softened softmax (``finetune.keep_temperature``).
    """

    name = "keep"

    def __init__(self, teachers: Sequence[nn.Module], cohort_taught: Any, weight: float = 1.0,
                 temperature: float = 2.0):
        super().__init__()
        if not teachers:
            raise ValueError("KeepKnowledge needs the initial model's networks.")
        self.teachers = nn.ModuleList(copy.deepcopy(list(teachers)))
        for p in self.teachers.parameters():
            p.requires_grad_(False)
        self.teachers.eval()
        taught = torch.as_tensor(cohort_taught, dtype=torch.bool).clone().reshape(-1)
        taught[0] = True
        self.register_buffer("cohort_taught", taught, persistent=False)
        self.weight = float(weight)
        self.temperature = float(temperature)

    def train(self, mode: bool = True) -> "KeepKnowledge":
        """The teachers stay in eval mode (running statistics, no dropout) whatever the step does."""
        super().train(mode)
        self.teachers.eval()
        return self

    @torch.no_grad()
    def teacher_probs(self, x: Tensor) -> Tensor:
        """Mean over the teachers of ``softmax(z / T)``, (B, C, *spatial)."""
        out: Optional[Tensor] = None
        for net in self.teachers:
            p = torch.softmax(net(x).float() / self.temperature, dim=1)
            out = p if out is None else out + p
        return out / len(self.teachers)

    def forward(self, *, x: Tensor, logits: Sequence[Tensor], labeled_y: Tensor, annotated: Optional[Tensor],
                n_labeled: int, progress: float = 0.0) -> dict[str, Tensor]:
        """``{"keep": weight · Σ_i loss_i}`` (added to the total by the step)."""
        zero = logits[0].sum() * 0.0
        if self.weight == 0.0:
            return {self.name: zero}
        n_classes = logits[0].shape[1]
        b = x.shape[0]
        taught = self.cohort_taught.to(x.device).unsqueeze(0).expand(b, n_classes).clone()
        if annotated is not None:
            taught[:n_labeled] = annotated.to(device=x.device, dtype=torch.bool)
        else:
            taught[:n_labeled] = True                 # every class annotated: nothing to keep there
        taught[:, 0] = True
        if not bool((~taught).any()):
            return {self.name: zero}
        voxels = torch.ones((b,) + tuple(x.shape[2:]), dtype=torch.bool, device=x.device)
        voxels[:n_labeled] = labeled_y.to(x.device) == 0
        teacher = self.teacher_probs(x)
        total = zero
        for out in logits:
            total = total + keep_distillation_loss(out, teacher, taught, voxels, self.temperature)
        return {self.name: self.weight * total}
