"""The configurations the SSL benchmark compares: one training framework + SCDL ablation flags each.

Every configuration runs through the same trainer (``scdl train``); a configuration only chooses
``--framework`` and the ``scdl`` settings of :class:`scdl.method.config.SCDLConfig`.

The ablation ladder (METHOD.md §4.6-§4.8; total = CPS + λ·(0.3·proxy + 0.1·SAC + 0.02·KL)):

==================  ==========  =======================================================  ==============
name                framework   SCDL loss terms                                          p2e_axis
==================  ==========  =======================================================  ==============
supervised          supervised  none (labeled patches only)                              -
cps                 cps         none                                                     -
cps+cdba            cps-scdl    proxy = P2E + 0.1·E2P            (use_sac, use_kl off)    tokens
cps+cdba+sac        cps-scdl    proxy + SAC                      (use_kl off)             tokens
cps-scdl            cps-scdl    proxy + SAC + KL  (the method as specified)              tokens
cps-scdl-classes    cps-scdl    proxy + SAC + KL, KL ≡ 0         (the released code)      classes
cps+cdba+kl         cps-scdl    proxy + KL                       (use_sac off; optional)  tokens
==================  ==========  =======================================================  ==============

Why KL is its own rung: METHOD.md §4.6 lists L_KL among the CDBA losses, and the paper's "+CDBA+SAC" row
(67.50) is its full method. But the released code normalises P_p2e over classes, which makes it equal to
P_e2p, so its KL term is identically 0: the authors' "+CDBA+SAC" numbers were obtained without any KL
gradient. We therefore split the ladder as CPS -> +P2E/E2P -> +SAC -> +KL, so that every rung differs
from the previous one by exactly one loss term; ``cps+cdba+kl`` (the literal reading of §4.6's "CDBA")
is available with ``--configs`` but not in the default set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from scdl.errors import ScdlError
from scdl.training.config import Framework


@dataclass(frozen=True)
class BenchConfiguration:
    """One compared configuration.

    Attributes:
        name: identifier used on the command line, in file names and in the table.
        framework: ``scdl train --framework`` value.
        scdl: overrides of :class:`scdl.method.config.SCDLConfig` (the config file's ``"scdl"`` group).
        description: one line for the table's legend.
    """

    name: str
    framework: str
    scdl: dict[str, Any] = field(default_factory=dict)
    description: str = ""


CONFIGURATIONS: dict[str, BenchConfiguration] = {c.name: c for c in (
    BenchConfiguration("supervised", Framework.SUPERVISED.value, {}, "one VNet, labeled patches only (GA-CE + GA-Dice)"),
    BenchConfiguration("cps", Framework.CPS.value, {}, "GA-CPS: two VNets, cross pseudo supervision on all patches"),
    BenchConfiguration("cps+cdba", Framework.CPS_SCDL.value, {"use_sac": False, "use_kl": False},
                       "CPS + SCDL proxy loss only (P2E + 0.1 E2P)"),
    BenchConfiguration("cps+cdba+sac", Framework.CPS_SCDL.value, {"use_kl": False},
                       "CPS + SCDL proxy loss + semantic anchors (no KL)"),
    BenchConfiguration("cps-scdl", Framework.CPS_SCDL.value, {},
                       "CPS + full SCDL (proxy + SAC + KL), P_p2e over tokens (METHOD.md)"),
    BenchConfiguration("cps-scdl-classes", Framework.CPS_SCDL.value, {"p2e_axis": "classes"},
                       "CPS + full SCDL, P_p2e over classes as in the released code (KL = 0)"),
    BenchConfiguration("cps+cdba+kl", Framework.CPS_SCDL.value, {"use_sac": False},
                       "CPS + SCDL proxy loss + KL (no SAC)"),
)}

#: The benchmark's default set: 6 configurations (the baselines, the ablation ladder, the p2e_axis variant).
DEFAULT_CONFIGS: tuple[str, ...] = ("supervised", "cps", "cps+cdba", "cps+cdba+sac", "cps-scdl", "cps-scdl-classes")

#: What ``--quick`` runs by default (a smoke test of the three frameworks).
QUICK_CONFIGS: tuple[str, ...] = ("supervised", "cps", "cps-scdl")


#: The separator of a knob variant: ``cps-scdl@lam=0.2`` is ``cps-scdl`` with ``SCDLConfig.lam = 0.2``;
#: several knobs chain (``cps-scdl@tau=0.1@num_samples=10``). ``@`` and ``=`` are valid in file names everywhere.
VARIANT_SEP = "@"

#: ``--configs sensitivity``: SCDL's own knobs one at a time around the paper's values (METHOD.md: λ = 0.1,
#: τ = 0.2, S = 50 proxy samples per class; the KL normalisation ``kl_reduction``: "batch" is the spec, "tokens"
#: the default model's), each paired against ``cps-scdl`` (the paper's values) and against its host ``cps``.
SENSITIVITY_CONFIGS: tuple[str, ...] = (
    "cps", "cps-scdl",
    "cps-scdl@lam=0.05", "cps-scdl@lam=0.3",
    "cps-scdl@kl_reduction=tokens",
    "cps-scdl@tau=0.1", "cps-scdl@tau=0.5",
    "cps-scdl@num_samples=10",
)

#: Names ``--configs`` expands: ``sensitivity`` -> :data:`SENSITIVITY_CONFIGS`.
ALIASES: dict[str, tuple[str, ...]] = {"sensitivity": SENSITIVITY_CONFIGS}


def _value(text: str) -> Any:
    """``0.2`` -> 0.2, ``10`` -> 10, ``true`` -> True, anything else stays a string (``tokens``)."""
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


def variant(name: str) -> BenchConfiguration:
    """``BASE@key=value[@key=value...]`` -> ``BASE`` with those :class:`scdl.method.config.SCDLConfig` fields.

    The base must be an SCDL configuration (framework ``cps-scdl``); every key must be a field of SCDLConfig and
    the values must pass its checks (it is constructed here, so a bad value fails before any training).

    Raises:
        ScdlError: an unknown base, a base without SCDL, an unknown key, a malformed or invalid value.
    """
    from dataclasses import fields

    from scdl.method.config import SCDLConfig

    base_name, *parts = name.split(VARIANT_SEP)
    base = CONFIGURATIONS.get(base_name)
    if base is None:
        raise ScdlError(f"configuration {name!r}: unknown base {base_name!r}.",
                        fix=f"write BASE{VARIANT_SEP}KEY=VALUE with BASE one of {', '.join(CONFIGURATIONS)}.")
    if base.framework != Framework.CPS_SCDL.value:
        raise ScdlError(f"configuration {name!r}: {base_name} has no SCDL knobs (framework {base.framework}).",
                        fix=f"vary an SCDL configuration, e.g. cps-scdl{VARIANT_SEP}lam=0.2.")
    known = {f.name for f in fields(SCDLConfig)}
    knobs: dict[str, Any] = {}
    for part in parts:
        key, sep, text = part.partition("=")
        if not sep or not key or not text:
            raise ScdlError(f"configuration {name!r}: {part!r} is not KEY=VALUE.", fix="write e.g. cps-scdl@lam=0.2.")
        if key not in known:
            raise ScdlError(f"configuration {name!r}: {key!r} is not an SCDL setting.",
                            fix=f"use one of {', '.join(sorted(known))}.")
        knobs[key] = _value(text)
    merged = {**base.scdl, **knobs}
    try:
        SCDLConfig(**merged)
    except ScdlError as exc:
        raise ScdlError(f"configuration {name!r}: {exc.message}", fix=exc.fix or "use a valid value "
                        "(docs/method.md).") from None
    except (TypeError, ValueError) as exc:
        raise ScdlError(f"configuration {name!r}: {exc}", fix="use a valid value (docs/method.md).") from None
    described = ", ".join(f"{k} = {v}" for k, v in knobs.items())
    return BenchConfiguration(name, base.framework, merged, f"{base_name} with {described} (one knob varied)")


def variant_base(name: str) -> Optional[str]:
    """The base configuration of a knob variant (``cps-scdl@lam=0.2`` -> ``cps-scdl``), None for a plain name."""
    return name.split(VARIANT_SEP, 1)[0] if VARIANT_SEP in name else None


def parse_configs(text: Optional[str | Iterable[str]]) -> tuple[BenchConfiguration, ...]:
    """``"cps,cps-scdl"`` (or a list of names) -> the configurations, in the given order, duplicates dropped.

    A name may be an alias (``sensitivity``) or a knob variant (``cps-scdl@lam=0.2``, :func:`variant`).

    Raises:
        ScdlError: an unknown name or an empty list.
    """
    if text is None:
        names = list(DEFAULT_CONFIGS)
    elif isinstance(text, str):
        names = [p.strip() for p in text.split(",") if p.strip()]
    else:
        names = [str(p).strip() for p in text if str(p).strip()]
    if not names:
        raise ScdlError("no configuration given.", fix=f"use e.g. --configs {','.join(DEFAULT_CONFIGS[:3])}.")
    names = [m for n in names for m in ALIASES.get(n, (n,))]
    unknown = [n for n in names if n not in CONFIGURATIONS and VARIANT_SEP not in n]
    if unknown:
        raise ScdlError(f"unknown configuration(s) {', '.join(unknown)}.",
                        fix=f"choose from {', '.join(CONFIGURATIONS)}, an alias ({', '.join(ALIASES)}) or a knob "
                            f"variant such as cps-scdl{VARIANT_SEP}lam=0.2.")
    return tuple(CONFIGURATIONS[n] if n in CONFIGURATIONS else variant(n) for n in dict.fromkeys(names))
