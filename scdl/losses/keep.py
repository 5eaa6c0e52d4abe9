"""Keep what you know: distillation from the initial model on the classes a case does not annotate.

Fine-tuning a model on cases where only some organs are drawn (a liver study draws the liver) teaches those
organs; nothing in the labels holds the others once the images come from a new scanner or phase. The initial
model, frozen, still knows them: it teaches them on the voxels whose label says nothing about them.

Learning without Forgetting (Li & Hoiem, "Learning without Forgetting", IEEE TPAMI 2017) adds to the new
task's loss a knowledge-distillation term (Hinton et al., "Distilling the Knowledge in a Neural Network", 2015):
the cross-entropy between the old model's and the new model's temperature-softened outputs (T = 2) on the new
data. In incremental segmentation the new labels mark the old classes as background; MiB (Cermelli et al.,
"Modeling the Background for Incremental Learning in Semantic Segmentation", CVPR 2020) makes the distillation
*unbiased* by comparing the old model's background with the new model's background merged with the classes
the new labels teach. PLOP (Douillard et al., "PLOP: Learning without Forgetting for Continual Semantic
Segmentation", CVPR 2021) distils on the background of the new labels as well (by pseudo-labels of the old
model and multi-scale feature pooling).

Here, for a patch whose annotated ("taught") classes are ``A`` (background included) and whose other classes
``K`` are kept from the initial model, both distributions are merged MiB-style into the bins
``{A} ∪ K``: ``p̃(A) = Σ_{c∈A} p(c)`` and ``p̃(k) = p(k)`` for ``k ∈ K``, the teacher's at temperature ``T``
(``p_T = softmax(z_T / T)``, averaged over the initial model's ensemble), the student's likewise. The term per
voxel is ``KL(p̃_T || p̃_S)``; the split between background and the taught organs is left to the labels (the
marginal loss), so the term never argues with them. It is computed on the voxels the labels leave open
(``label == 0`` of a partially annotated patch; every voxel of an unlabeled patch), and averaged per class
as the paper's GA losses do: voxels are grouped by the teacher's most likely bin, each group's mean KL is
taken and the groups are averaged, so a kidney counts as much as the background around it. Multiplied by
``T²`` (Hinton et al.: the gradients' scale does not change with ``T``).

With every class annotated (``K`` empty) there is one bin and the term is exactly 0.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["keep_distillation_loss", "merged_log_probs"]


def merged_log_probs(log_p: Tensor, taught: Tensor) -> Tensor:
    """Log-probabilities of the bins ``{taught} ∪ kept``: channel 0 = log Σ_{c taught} p_c (background is
    taught), channel k = log p_k for a kept class and -inf for a taught one.

    Args:
        log_p: (B, C, *spatial) log-probabilities.
        taught: (B, C) bool, True where class c is taught in patch b (column 0 True).

    Returns:
        (B, C, *spatial).
    """
    shape = taught.shape + (1,) * (log_p.dim() - 2)
    t = taught.reshape(shape)
    merged = torch.logsumexp(log_p.masked_fill(~t, float("-inf")), dim=1, keepdim=True)
    rest = log_p.masked_fill(t, float("-inf"))
    return torch.cat([merged, rest[:, 1:]], dim=1)


def keep_distillation_loss(student_logits: Tensor, teacher_probs: Tensor, taught: Tensor,
                           voxels: Optional[Tensor] = None, temperature: float = 2.0) -> Tensor:
    """Class-balanced, background-merged KL from the frozen initial model (see the module docstring).

    Args:
        student_logits: (B, C, *spatial) logits of the network being trained.
        teacher_probs: (B, C, *spatial) softmax of the initial model's logits divided by ``temperature``
            (mean over its networks), without gradient.
        taught: (B, C) bool: the classes the labels teach in each patch (merged into background); column 0
            True. A patch with every class taught contributes nothing.
        voxels: (B, *spatial) bool: where to distil (None: everywhere).
        temperature: T of the softened softmax (Li & Hoiem use 2); the result is multiplied by T².

    Returns:
        scalar tensor: ``T² · mean over bins j of mean_{v: argmax p̃_T(v) = j} KL_v`` (0, with a gradient path,
        when no voxel is distilled).
    """
    if student_logits.shape != teacher_probs.shape:
        raise ValueError(f"keep distillation: student {tuple(student_logits.shape)} and teacher "
                         f"{tuple(teacher_probs.shape)} differ.")
    if taught.shape != student_logits.shape[:2]:
        raise ValueError(f"keep distillation: taught {tuple(taught.shape)} does not match "
                         f"{tuple(student_logits.shape[:2])} (expected (B, C)).")
    taught = taught.to(device=student_logits.device, dtype=torch.bool).clone()
    taught[:, 0] = True
    t = float(temperature)
    if not t > 0:
        raise ValueError(f"keep distillation: the temperature must be > 0, got {temperature!r}.")
    zero = student_logits.sum() * 0.0
    spatial = student_logits.shape[2:]
    mask = torch.ones((student_logits.shape[0],) + tuple(spatial), dtype=torch.bool, device=student_logits.device)
    if voxels is not None:
        mask = mask & voxels.to(device=mask.device, dtype=torch.bool)
    has_kept = (~taught).any(dim=1)                                                       # (B,)
    mask = mask & has_kept.reshape((-1,) + (1,) * len(spatial))
    if not bool(mask.any()):
        return zero
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    log_q = merged_log_probs(torch.log_softmax(student_logits.to(dtype) / t, dim=1), taught)
    p_teacher = teacher_probs.detach().to(dtype).clamp_min(0.0)
    log_p = merged_log_probs(torch.log(p_teacher.clamp_min(1e-30)), taught)
    p = torch.exp(log_p)                                                                  # 0 in the -inf bins
    open_bin = p > 0
    kl = (torch.xlogy(p, p) - p * log_q.masked_fill(~open_bin, 0.0)).sum(dim=1)           # (B, *spatial)
    bins = torch.argmax(log_p, dim=1)                                                     # teacher's bin per voxel
    n_bins = student_logits.shape[1]
    kl_m, bins_m = kl[mask], bins[mask]
    sums = torch.zeros(n_bins, dtype=kl.dtype, device=kl.device).index_add_(0, bins_m, kl_m)
    counts = torch.bincount(bins_m, minlength=n_bins).to(kl.dtype)
    present = counts > 0
    per_bin = sums[present] / counts[present]
    return (t * t) * per_bin.mean()
