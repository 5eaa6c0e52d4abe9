"""One composable training step: supervised, CPS and CPS+SCDL (and Mean Teacher ± SCDL) are flags of it.

The baselines and SCDL share this code path (METHOD.md §2): the framework only decides which loss terms
are added. ``TrainingStep`` is an ``nn.Module`` holding every trainable module (the segmentation networks
and the SCDL head), so ``parameters()``/``trainable_parameters()``, ``state_dict()``/``load_state_dict()``,
``.to(device)`` and ``.train()``/``.eval()`` work on all of them at once::

    step = TrainingStep.build({"name": "vnet", "n_classes": 14, "n_filters": 16}, framework="cps-scdl")
    opt = torch.optim.SGD(step.trainable_parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    terms = step(labeled_x, labeled_y, unlabeled_x, progress=it / max_it)   # dict, "total" + every term
    opt.zero_grad(); terms["total"].backward(); opt.step()
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scdl.errors import ScdlError
from scdl.losses.cps import cps_loss, cps_weight
from scdl.losses.supervised import supervised_terms
from scdl.method.config import SCDLConfig, dataclass_from_dict
from scdl.method.head import SCDLHead
from scdl.method.tokens import class_proportions, pool_tokens
from scdl.networks.init import INIT_SCHEMES_BY_INDEX, init_weights
from scdl.networks.vnet import build_network
from scdl.training.config import DEFAULT_FRAMEWORK, Framework

__all__ = ["FRAMEWORKS", "SCDLConfig", "StepConfig", "TrainingStep"]

#: framework name -> (host, SCDL on?, number of segmentation networks); the names are
#: scdl.training.config.Framework's.
FRAMEWORKS: dict[str, tuple[str, bool, int]] = {f.value: (f.host, f.uses_scdl, f.networks) for f in Framework}


@dataclass
class StepConfig:
    """Loss weights of the host frameworks; defaults are the paper's (METHOD.md §2).

    Attributes:
        sup_k, sup_gamma: GA-CE(k, γ) of the supervised loss (10, 0.5).
        sup_ce_weight, sup_dice_weight: supervised loss = ce_weight·GACE + dice_weight·GADice (1, 1).
        cps_k, cps_gamma: GA-CE(k, γ) of the CPS loss (100, 0.5).
        cps_weight, cps_ramp: w_cps(t) = cps_weight · exp(-cps_ramp · (1 - t)²) (0.1, 5).
        ema_decay: Mean Teacher only: EMA decay of the teacher (0.99, Mean Teacher's value; not in the paper).
        mt_noise_std, mt_noise_clip: Mean Teacher only: Gaussian noise on the teacher's input,
            clamp(N(0, std²), -clip, clip) (0.1, 0.2; UA-MT's values).
        consistency_weight, consistency_ramp: Mean Teacher only: weight of the softmax-MSE consistency,
            consistency_weight · exp(-consistency_ramp · (1 - t)²) (0.1, 5: the CPS ramp).
        exclusion_weight: partially annotated patches only: weight of the exclusion Dice added to the
            (marginal) supervised loss (1: Shi et al. 2021 add it unweighted; see scdl.losses.partial).
    """

    sup_k: float = 10.0
    sup_gamma: float = 0.5
    sup_ce_weight: float = 1.0
    sup_dice_weight: float = 1.0
    cps_k: float = 100.0
    cps_gamma: float = 0.5
    cps_weight: float = 0.1
    cps_ramp: float = 5.0
    ema_decay: float = 0.99
    mt_noise_std: float = 0.1
    mt_noise_clip: float = 0.2
    consistency_weight: float = 0.1
    consistency_ramp: float = 5.0
    exclusion_weight: float = 1.0

    def __post_init__(self) -> None:
        for name in ("sup_k", "cps_k"):
            if not 0.0 < float(getattr(self, name)) <= 100.0:
                raise ScdlError(f"step setting {name} must be a percentage in (0, 100], got {getattr(self, name)!r}.")
        if not 0.0 <= float(self.ema_decay) < 1.0:
            raise ScdlError(f"step setting ema_decay must lie in [0, 1), got {self.ema_decay!r}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "StepConfig":
        """Build from a dict (the ``"step"`` group of a training config); unknown keys are a user error."""
        return dataclass_from_dict(cls, data, "step")


def _framework(name: str) -> tuple[str, bool, int]:
    if name not in FRAMEWORKS:
        raise ScdlError(f"unknown training framework {name!r}.", fix=f"use one of {', '.join(FRAMEWORKS)}.")
    return FRAMEWORKS[name]


def _as_config(value: Union[None, Mapping[str, Any], Any], cls: type) -> Any:
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        return cls.from_dict(value)
    raise TypeError(f"expected {cls.__name__} or a dict, got {type(value).__name__}")


class TrainingStep(nn.Module):
    """Loss of one training iteration for every framework.

    Args:
        networks: the segmentation networks (``VNet``-like: ``net(x, return_features=True)`` gives
            (logits, x9)). 1 for supervised / Mean Teacher, 2 (A, B) for CPS. A supervised step with two
            networks trains both on the labeled patches.
        framework: ``"supervised"``, ``"cps"``, ``"cps-scdl"``, ``"mean-teacher"``, ``"mean-teacher-scdl"``.
        n_classes: C; read from ``networks[0].n_classes`` when None.
        step: :class:`StepConfig` or a dict of overrides.
        scdl: :class:`SCDLConfig` or a dict of overrides (ablations: ``use_sac``, ``use_kl``, ``use_cdba``,
            ``p2e_axis``).
        feature_dim: F of x9 for the SCDL head; ``networks[0].n_filters`` when None.

    Submodules: ``networks`` (ModuleList), ``scdl`` (SCDLHead or None), ``teacher`` (EMA copy of
    ``networks[0]``, Mean Teacher only, no gradients), ``terms`` (pluggable loss terms, :meth:`add_term`; e.g.
    ``scdl.training.keep.KeepKnowledge`` when fine-tuning on partially annotated cases).
    """

    def __init__(
        self,
        networks: Sequence[nn.Module],
        framework: str = DEFAULT_FRAMEWORK.value,
        n_classes: Optional[int] = None,
        step: Union[None, StepConfig, Mapping[str, Any]] = None,
        scdl: Union[None, SCDLConfig, Mapping[str, Any]] = None,
        feature_dim: Optional[int] = None,
    ):
        super().__init__()
        self.framework = framework
        self.host, self.use_scdl, _ = _framework(framework)
        self.config: StepConfig = _as_config(step, StepConfig)
        self.scdl_config: SCDLConfig = _as_config(scdl, SCDLConfig)
        if len(networks) < 1:
            raise ValueError("TrainingStep needs at least one network.")
        if self.host == "cps" and len(networks) != 2:
            raise ScdlError(f"framework {framework} trains two networks, {len(networks)} were given.")
        self.networks = nn.ModuleList(networks)
        self.n_classes = int(n_classes if n_classes is not None else getattr(networks[0], "n_classes"))
        self.scdl: Optional[SCDLHead] = None
        if self.use_scdl:
            dim = int(feature_dim if feature_dim is not None else getattr(networks[0], "n_filters"))
            self.scdl = SCDLHead(dim, self.n_classes, self.scdl_config)
        self.teacher: Optional[nn.Module] = None
        if self.host == "mean_teacher":
            self.teacher = copy.deepcopy(networks[0])
            for p in self.teacher.parameters():
                p.requires_grad_(False)
            self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        self.terms = nn.ModuleList()

    def add_term(self, term: nn.Module) -> "TrainingStep":
        """Plug a loss term into the step: a module with a ``name`` whose ``forward(*, x, logits, labeled_y,
        annotated, n_labeled, progress)`` returns a dict of scalar tensors; ``out[term.name]`` is added to the
        total, every entry is reported. Its parameters and buffers join the step's (``state_dict``, ``.to``,
        checkpoints). Without terms the step is exactly the paper's."""
        if not getattr(term, "name", None):
            raise ValueError("a step term needs a name (the key of its loss in the returned terms).")
        self.terms.append(term)
        return self

    # -- construction --------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        arch: Mapping[str, Any],
        framework: str = DEFAULT_FRAMEWORK.value,
        step: Union[None, StepConfig, Mapping[str, Any]] = None,
        scdl: Union[None, SCDLConfig, Mapping[str, Any]] = None,
    ) -> "TrainingStep":
        """Networks from ``arch`` (see :func:`scdl.networks.vnet.build_network`), initialised as in the paper:
        network A Kaiming-normal, network B Xavier-normal. Seed torch before calling for reproducibility."""
        count = _framework(framework)[2]
        nets = [init_weights(build_network(arch), INIT_SCHEMES_BY_INDEX[i % 2]) for i in range(count)]
        return cls(nets, framework, step=step, scdl=scdl)

    # -- access for the trainer ----------------------------------------------------------------------
    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter the optimiser updates: the networks and the SCDL head (not the EMA teacher,
        not the frozen ``sigma_emb``)."""
        return (p for p in self.parameters() if p.requires_grad)

    def network_state_dicts(self) -> list[dict[str, Tensor]]:
        """Plain state dicts of the segmentation networks in the authors' key layout (for model packages)."""
        return [{k: v.detach().clone() for k, v in net.state_dict().items()} for net in self.networks]

    # -- the step ------------------------------------------------------------------------------------
    def forward(
        self,
        labeled_x: Tensor,
        labeled_y: Tensor,
        unlabeled_x: Optional[Tensor] = None,
        progress: float = 0.0,
        eps: Optional[Tensor] = None,
        annotated: Optional[Tensor] = None,
    ) -> dict[str, Tensor]:
        """Loss terms of one iteration.

        Args:
            labeled_x: (B_l, 1, D, H, W) labeled patches, B_l >= 1.
            labeled_y: (B_l, D, H, W) integer ground truth in [0, C).
            unlabeled_x: (B_u, 1, D, H, W) unlabeled patches, or None / B_u = 0.
            progress: training progress t in [0, 1] (iteration / max iterations) for the ramps.
            eps: SCDL proxy noise (C, S, D), drawn when None (tests inject it).
            annotated: (B_l, C) bool, class c annotated in labeled patch b (column 0 True), or None = every
                class. Not-annotated classes are unknown, not background: the supervised terms become marginal
                + exclusion losses and SCDL's labeled weights and anchors use only the annotated classes
                (scdl.losses.partial); the CPS partner's pseudo-labels still cover every voxel. With every
                entry True the terms equal those of ``annotated=None`` exactly.

        Returns:
            dict of scalar tensors: ``total`` (backpropagate this), ``sup`` and ``sup_<i>`` per network
            (``exclusion``, its part summed over the networks, when ``annotated`` is given);
            CPS: ``cps``, ``w_cps``; Mean Teacher: ``consistency``, ``w_consistency``; SCDL: ``scdl``
            (λ-weighted, included in ``total``) and its terms ``proxy``, ``p2e``, ``e2p``, ``kl``, ``sac``
            (those enabled); each plugged term's entries (``keep``: weighted, included in ``total``).
        """
        if labeled_x.shape[0] < 1:
            raise ValueError("a training step needs at least one labeled patch.")
        if labeled_y.shape != labeled_x.shape[:1] + labeled_x.shape[2:]:
            raise ValueError(f"labels {tuple(labeled_y.shape)} do not match patches {tuple(labeled_x.shape)}.")
        n_labeled = labeled_x.shape[0]
        has_unlabeled = unlabeled_x is not None and unlabeled_x.shape[0] > 0
        x = torch.cat([labeled_x, unlabeled_x], dim=0) if has_unlabeled else labeled_x
        cfg = self.config
        terms: dict[str, Tensor] = {}

        logits: list[Tensor] = []
        features: Optional[Tensor] = None
        for i, net in enumerate(self.networks):
            if i == 0 and self.use_scdl:
                out, features = net(x, return_features=True)
            else:
                out = net(x)
            logits.append(out)

        if annotated is not None and annotated.shape != (n_labeled, self.n_classes):
            raise ValueError(f"annotated {tuple(annotated.shape)} does not fit {n_labeled} labeled patches and "
                             f"{self.n_classes} classes.")
        sup = x.new_zeros(())
        exclusion = x.new_zeros(())
        for i, out in enumerate(logits):
            parts = supervised_terms(out[:n_labeled], labeled_y, cfg.sup_k, cfg.sup_gamma, cfg.sup_ce_weight,
                                     cfg.sup_dice_weight, annotated, cfg.exclusion_weight)
            terms[f"sup_{i}"] = parts["total"]
            sup = sup + parts["total"]
            exclusion = exclusion + parts["exclusion"].detach()
        terms["sup"] = sup
        if annotated is not None:
            terms["exclusion"] = exclusion
        total = sup

        if self.host == "cps":
            w = cps_weight(progress, cfg.cps_weight, cfg.cps_ramp)
            terms["cps"] = cps_loss(logits[0], logits[1], cfg.cps_k, cfg.cps_gamma)
            terms["w_cps"] = x.new_tensor(w)
            total = total + w * terms["cps"]
        elif self.host == "mean_teacher":
            w = cps_weight(progress, cfg.consistency_weight, cfg.consistency_ramp)
            terms["consistency"] = self._consistency(logits[0][n_labeled:], x[n_labeled:])
            terms["w_consistency"] = x.new_tensor(w)
            total = total + w * terms["consistency"]

        if self.scdl is not None:
            grid = self.scdl_config.grid_for(tuple(x.shape[2:]))
            tokens = pool_tokens(features, grid)
            y_dist = class_proportions(labeled_y, self.n_classes, grid,
                                       dtype=torch.promote_types(tokens.dtype, torch.float32))
            scdl_terms = self.scdl(tokens, y_dist, eps=eps, annotated=annotated)
            terms["scdl"] = scdl_terms.pop("total")
            terms.update(scdl_terms)
            total = total + terms["scdl"]

        for term in self.terms:
            extra = term(x=x, logits=logits, labeled_y=labeled_y, annotated=annotated, n_labeled=n_labeled,
                         progress=progress)
            terms.update(extra)
            total = total + extra[term.name]

        terms["total"] = total
        return terms

    # -- Mean Teacher --------------------------------------------------------------------------------
    def _consistency(self, student_logits: Tensor, x_unlabeled: Tensor) -> Tensor:
        """Softmax MSE between the student and the EMA teacher (noisy input) on the unlabeled patches."""
        if x_unlabeled.shape[0] == 0:
            return student_logits.sum() * 0.0
        if self.training and torch.is_grad_enabled():
            self._update_teacher()
        cfg = self.config
        noise = (torch.randn_like(x_unlabeled) * cfg.mt_noise_std).clamp(-cfg.mt_noise_clip, cfg.mt_noise_clip)
        with torch.no_grad():
            teacher_probs = torch.softmax(self.teacher(x_unlabeled + noise), dim=1)
        return F.mse_loss(torch.softmax(student_logits, dim=1), teacher_probs)

    @torch.no_grad()
    def _update_teacher(self) -> None:
        """EMA of the student's weights into the teacher, with Mean Teacher's warm-up
        ``α = min(1 - 1/(n + 1), ema_decay)``; buffers (BN statistics) are copied. Run at the start of each
        training forward, i.e. once after every optimiser step, so the trainer needs no extra call."""
        n = int(self.ema_updates)
        alpha = min(1.0 - 1.0 / (n + 1), self.config.ema_decay)
        student = self.networks[0]
        for t, s in zip(self.teacher.parameters(), student.parameters()):
            t.mul_(alpha).add_(s.detach(), alpha=1.0 - alpha)
        for t, s in zip(self.teacher.buffers(), student.buffers()):
            t.copy_(s)
        self.ema_updates += 1
