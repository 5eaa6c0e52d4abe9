"""Configuration of the SCDL module (METHOD.md §4), with the paper's values as defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Optional

from scdl.errors import ScdlError

P2E_AXES = ("tokens", "classes")
KL_REDUCTIONS = ("batch", "tokens")


@dataclass
class SCDLConfig:
    """Every hyperparameter of SCDL. Defaults are the paper's.

    Attributes:
        embed_dim: D, size of the embedding space and of each proxy mean (256).
        hidden_dim: width of the two hidden layers of the embedding MLP (512).
        dropout: dropout after the first two MLP layers (0.2).
        num_samples: S, samples drawn per class proxy each step (50).
        tau: τ of the embedding→proxy softmax (0.2).
        tau_p2e: τ of the proxy→embedding softmax; None = same as ``tau``.
        p2e_axis: ``"tokens"`` (METHOD.md §4.4: P_p2e normalised over the tokens of one image) or
            ``"classes"`` (the released code: over classes, so P_p2e ≡ P_e2p and KL ≡ 0).
        e2p_weight: weight of L_E2P inside proxy_loss (0.1).
        lam: λ, weight of the whole SCDL loss added to the host loss (0.1).
        proxy_weight: weight of proxy_loss = L_P2E + e2p_weight·L_E2P (0.3).
        sac_weight: weight of L_SAC (0.1).
        kl_weight: weight of L_KL (0.02).
        use_cdba: compute proxy_loss (class-distribution bidirectional alignment).
        use_sac: compute L_SAC (semantic anchor constraints).
        use_kl: compute L_KL.
        token_stride: token grid = patch size // token_stride per axis (8: a 12³ grid for 96³ patches).
        token_grid: explicit token grid (T, T, T), overriding ``token_stride``.
        kl_reduction: ``"batch"`` (METHOD.md §4.6: the KL sum over tokens and classes divided by the batch
            size) or ``"tokens"`` (divided by batch size × tokens per patch). With ``p2e_axis="tokens"`` the
            "batch" sum grows with the token count (about L·ln(L/C) per patch at initialisation: ~8e3 for
            12³ tokens and 14 classes), "tokens" keeps it O(ln L). Not in the paper; default is the spec.
        kl_clamp: probabilities are clamped to at least this before the logs of L_KL (1e-8).
        min_class_mass: a class takes part in SAC for a patch when its token mass exceeds this (1e-6).
    """

    embed_dim: int = 256
    hidden_dim: int = 512
    dropout: float = 0.2
    num_samples: int = 50
    tau: float = 0.2
    tau_p2e: Optional[float] = None
    p2e_axis: str = "tokens"
    e2p_weight: float = 0.1
    lam: float = 0.1
    proxy_weight: float = 0.3
    sac_weight: float = 0.1
    kl_weight: float = 0.02
    use_cdba: bool = True
    use_sac: bool = True
    use_kl: bool = True
    token_stride: int = 8
    token_grid: Optional[tuple[int, int, int]] = None
    kl_reduction: str = "batch"
    kl_clamp: float = 1e-8
    min_class_mass: float = 1e-6

    def __post_init__(self) -> None:
        if self.p2e_axis not in P2E_AXES:
            raise ScdlError(f"SCDL p2e_axis must be one of {P2E_AXES}, got {self.p2e_axis!r}.",
                            fix='use "tokens" (the method) or "classes" (the released code).')
        if self.kl_reduction not in KL_REDUCTIONS:
            raise ScdlError(f"SCDL kl_reduction must be one of {KL_REDUCTIONS}, got {self.kl_reduction!r}.",
                            fix='use "batch" (the method) or "tokens".')
        for name in ("embed_dim", "hidden_dim", "num_samples", "token_stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ScdlError(f"SCDL {name} must be a positive integer, got {value!r}.")
        for name in ("tau",) + (("tau_p2e",) if self.tau_p2e is not None else ()):
            if not float(getattr(self, name)) > 0:
                raise ScdlError(f"SCDL {name} must be > 0, got {getattr(self, name)!r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ScdlError(f"SCDL dropout must lie in [0, 1), got {self.dropout!r}.")
        if self.token_grid is not None:
            grid = tuple(int(t) for t in self.token_grid)
            if len(grid) != 3 or min(grid) < 1:
                raise ScdlError(f"SCDL token_grid must be three positive integers, got {self.token_grid!r}.")
            self.token_grid = grid  # type: ignore[assignment]

    @property
    def tau_proxy_to_embedding(self) -> float:
        return self.tau if self.tau_p2e is None else self.tau_p2e

    def grid_for(self, spatial: tuple[int, ...]) -> tuple[int, ...]:
        """Token grid for a patch of size ``spatial`` (D, H, W): ``token_grid`` or ``max(1, s // token_stride)``."""
        if self.token_grid is not None:
            return tuple(self.token_grid)
        return tuple(max(1, int(s) // self.token_stride) for s in spatial)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SCDLConfig":
        """Build from a dict (e.g. a training config file); unknown keys are a user error."""
        return dataclass_from_dict(cls, data, "SCDL")


def dataclass_from_dict(cls: type, data: Mapping[str, Any], what: str) -> Any:
    """Build the config dataclass ``cls`` from ``data``; unknown keys are one user error naming ``what``."""
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ScdlError(f"unknown {what} settings {sorted(unknown)}.", fix=f"use only {sorted(known)}.")
    return cls(**dict(data))
