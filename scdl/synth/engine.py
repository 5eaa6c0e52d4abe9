"""One synthesis of an anatomy layout: HU image (D, H, W) from structures + depth + tissue table + seed.

Steps (all randomness from one ``numpy.random.Generator``, consumed in a fixed order, so a seed gives
byte-identical output and another seed another subject):

1. subject: phase (native / arterial / portal or drawn), per-tissue mean (uniform in the phase's range of
   :data:`scdl.synth.tissues.HU`), renal cortex thickness, bone cortex thickness, subcutaneous fat and
   muscle-wall thickness, gas fractions, dose (noise level), slice thickness, point spread;
2. tissues: structure -> tissue by the table's names; kidneys split into cortex (outer ``cortex_mm``) and
   medulla, bones into cortex and cancellous bone, unlabeled body voxels into subcutaneous fat, muscle wall
   and visceral tissue (fat / soft-tissue mixture through a smooth random field);
3. texture: per-tissue mean + per-tissue std x spatially correlated unit noise (correlation ~1-2 mm);
   gas pockets in stomach, bowel and oesophagus (a smooth field above its quantile);
4. partial-volume blur: Gaussian point spread in-plane and the slice profile along z (FWHM = slice
   thickness); scanner noise at the drawn dose (white, lightly correlated), a smooth bias field.

Cost on this 2-core machine (timed by hand, 2026-12-02): about 25 ms for a 64x64x32 patch of patient A's
layout at 3 mm, 0.3 s for A's whole 122x101x112 grid, 13 s for a 216x216x217 map at 1.5 mm (scdl synth).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from scdl.synth.fields import correlated_noise, smooth_field
from scdl.synth.tissues import GAS_FRACTION, HU, N_TISSUES, PHASES, SPLIT_TISSUES, Tissue

#: Defaults of the ``synth`` configuration block (``scdl train --set synth.KEY=VALUE``).
SYNTH_DEFAULTS: dict[str, Any] = {
    "phase": "random",               # native | arterial | portal | random
    "phase_weights": [1.0, 1.0, 1.0],
    "cortex_mm": [3.0, 7.0],          # renal cortex thickness range
    "bone_cortex_mm": [1.0, 3.0],
    "fat_mm": [5.0, 25.0],            # subcutaneous fat thickness range
    "muscle_wall_mm": [4.0, 14.0],
    "texture_mm": [0.8, 2.0],         # correlation length of the tissue texture
    "noise_hu": [4.0, 25.0],          # scanner noise std (dose): low dose = high noise
    "slice_mm": [1.0, 5.0],           # reconstructed slice thickness range
    "psf_mm": [0.6, 1.2],             # in-plane point spread FWHM
    "bias_hu": 10.0,                 # std of the smooth bias field
    "mean_jitter": 0.15,              # extra spread of a subject's tissue means beyond the range, fraction of its width
    "elastic_mm": 3.0,                # spatial: displacement amplitude before synthesis (0 = off)
    "elastic_scale_mm": 40.0,
    "shrink_prob": 0.2,               # spatial: probability that an organ is eroded
    "shrink_mm": 4.0,
    # issue 27, each off by default (0): what a subject's intensities may do beyond the HU table
    "random_hu_prob": 0.0,            # share of subjects whose organ/vessel/soft tissues get SynthSeg-style means
    "random_hu_range": [-50.0, 250.0],    # ... drawn uniformly here, each tissue on its own (Billot et al. 2023)
    "liver_like_prob": 0.0,           # share of portal-phase subjects whose IVC, portal/splenic veins, adrenals
    "liver_like_hu": 15.0,            # ... are the liver's mean +- this (shape and neighbourhood, not HU, tell them)
    "calcify_prob": 0.0,              # share of subjects with calcified costal cartilage
    "calcify_fraction": [0.1, 0.5],   # ... fraction of its voxels
    "calcify_hu": [250.0, 700.0],     # ... their HU
}

#: Tissues whose means ``random_hu_prob`` redraws: organs, vessels, muscle and generic soft tissue. Air, lung,
#: airways, fat and bone keep their physical values (bone must stay bone: ribs called spleen are an error).
RANDOM_HU_TISSUES: tuple[Tissue, ...] = (
    Tissue.MUSCLE, Tissue.SOFT, Tissue.LIVER, Tissue.SPLEEN, Tissue.KIDNEY_CORTEX, Tissue.KIDNEY_MEDULLA,
    Tissue.KIDNEY_CYST, Tissue.GALLBLADDER, Tissue.PANCREAS, Tissue.ADRENAL, Tissue.STOMACH, Tissue.BOWEL,
    Tissue.ESOPHAGUS, Tissue.ARTERY, Tissue.VEIN, Tissue.PORTAL, Tissue.HEART, Tissue.SPINAL_CORD, Tissue.BRAIN,
    Tissue.THYROID, Tissue.BLADDER, Tissue.PROSTATE, Tissue.CARTILAGE)
#: Tissues that ``liver_like_prob`` moves next to the liver's mean in portal-phase subjects.
LIVER_LIKE_TISSUES: tuple[Tissue, ...] = (Tissue.VEIN, Tissue.PORTAL, Tissue.ADRENAL)


@dataclass
class Subject:
    """The drawn parameters of one synthesis (JSON-ready through :meth:`to_dict`)."""

    phase: str
    means: list[float]
    stds: list[float]
    cortex_mm: float
    bone_cortex_mm: float
    fat_mm: float
    muscle_wall_mm: float
    texture_mm: float
    noise_hu: float
    slice_mm: float
    psf_mm: float
    gas: dict[int, float] = field(default_factory=dict)
    random_hu: bool = False           # means redrawn SynthSeg-style (``random_hu_prob``)
    liver_like: bool = False          # portal vessels and adrenals at the liver's HU (``liver_like_prob``)
    calcify: float = 0.0              # fraction of costal cartilage calcified (``calcify_prob``)
    calcify_hu: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _uniform(rng: np.random.Generator, pair: Sequence[float]) -> float:
    return float(rng.uniform(float(pair[0]), float(pair[1])))


def draw_subject(rng: np.random.Generator, config: Optional[Mapping[str, Any]] = None,
                 phase: Optional[str] = None) -> Subject:
    """Draw one subject's synthesis parameters (``phase`` overrides the config's)."""
    c = {**SYNTH_DEFAULTS, **dict(config or {})}
    weights = np.asarray(c["phase_weights"], dtype=np.float64)
    drawn = PHASES[int(rng.choice(len(PHASES), p=weights / weights.sum()))]
    chosen = phase or c["phase"]
    chosen = drawn if chosen == "random" else chosen
    if chosen not in PHASES:
        raise ValueError(f"phase must be one of {', '.join(PHASES)} or random, not {chosen!r}")
    means, stds = [0.0] * N_TISSUES, [0.0] * N_TISSUES
    jitter = float(c["mean_jitter"])
    for tissue in Tissue:
        hu = HU.get(tissue)
        if hu is None:
            continue
        lo, hi = hu.mean_range(chosen)
        width = (hi - lo) * jitter
        means[int(tissue)] = float(rng.uniform(lo - width, hi + width))
        stds[int(tissue)] = float(hu.std * rng.uniform(0.7, 1.3))
    gas = {int(t): _uniform(rng, r) for t, r in GAS_FRACTION.items()}
    subject = Subject(phase=chosen, means=means, stds=stds, cortex_mm=_uniform(rng, c["cortex_mm"]),
                      bone_cortex_mm=_uniform(rng, c["bone_cortex_mm"]), fat_mm=_uniform(rng, c["fat_mm"]),
                      muscle_wall_mm=_uniform(rng, c["muscle_wall_mm"]), texture_mm=_uniform(rng, c["texture_mm"]),
                      noise_hu=_uniform(rng, c["noise_hu"]), slice_mm=_uniform(rng, c["slice_mm"]),
                      psf_mm=_uniform(rng, c["psf_mm"]), gas=gas)
    _draw_extras(rng, c, subject)
    return subject


def _draw_extras(rng: np.random.Generator, c: Mapping[str, Any], subject: Subject) -> None:
    """The switches of issue 27 (random HU, liver-like vessels, calcified cartilage), in place.

    A switch at probability 0 draws nothing, so subjects of earlier configurations are unchanged.
    """
    if float(c["random_hu_prob"]) > 0 and rng.random() < float(c["random_hu_prob"]):
        subject.random_hu = True
        for tissue in RANDOM_HU_TISSUES:
            subject.means[int(tissue)] = _uniform(rng, c["random_hu_range"])
    if (float(c["liver_like_prob"]) > 0 and subject.phase == "portal" and not subject.random_hu
            and rng.random() < float(c["liver_like_prob"])):
        subject.liver_like = True
        liver, spread = subject.means[int(Tissue.LIVER)], float(c["liver_like_hu"])
        for tissue in LIVER_LIKE_TISSUES:
            subject.means[int(tissue)] = float(liver + rng.uniform(-spread, spread))
    if float(c["calcify_prob"]) > 0 and rng.random() < float(c["calcify_prob"]):
        subject.calcify = _uniform(rng, c["calcify_fraction"])
        subject.calcify_hu = _uniform(rng, c["calcify_hu"])


def tissue_map(structures: np.ndarray, depth: np.ndarray, lut: Sequence[int], subject: Subject) -> np.ndarray:
    """uint8 tissue code per voxel (D, H, W): the table's tissues with the depth-based splits applied.

    Args:
        structures: int16 (D, H, W), -1 = outside the body, 0 = unlabeled body tissue.
        depth: uint8 (D, H, W) mm to the region's border.
        lut: tissue code per label value (:func:`scdl.synth.tissues.tissue_lut`).
    """
    table = np.asarray([int(Tissue.AIR)] + list(lut), dtype=np.uint8)           # index = value + 1
    values = np.clip(structures.astype(np.int32) + 1, 0, len(table) - 1)
    tissue = table[values]
    d = depth.astype(np.float32)
    kidney = tissue == Tissue.KIDNEY
    tissue[kidney & (d < subject.cortex_mm)] = Tissue.KIDNEY_CORTEX
    tissue[kidney & (d >= subject.cortex_mm)] = Tissue.KIDNEY_MEDULLA
    bone = tissue == Tissue.BONE
    tissue[bone & (d < subject.bone_cortex_mm)] = Tissue.BONE_CORTEX
    body = tissue == Tissue.BODY
    tissue[body & (d < subject.fat_mm)] = Tissue.FAT
    tissue[body & (d >= subject.fat_mm) & (d < subject.fat_mm + subject.muscle_wall_mm)] = Tissue.MUSCLE
    tissue[body & (d >= subject.fat_mm + subject.muscle_wall_mm)] = Tissue.VISCERAL
    for split in SPLIT_TISSUES:
        tissue[tissue == split] = Tissue.SOFT          # nothing left over (e.g. no depth): soft tissue
    return tissue


def _axes(shape: Sequence[int], spacing_zyx: Sequence[float]) -> list[np.ndarray]:
    return [np.arange(n, dtype=np.float64) * float(s) for n, s in zip(shape, spacing_zyx)]


def render(tissue: np.ndarray, spacing_zyx: Sequence[float], subject: Subject, rng: np.random.Generator,
           bias_hu: float = SYNTH_DEFAULTS["bias_hu"]) -> np.ndarray:
    """HU float32 (D, H, W) of a tissue map for a drawn subject."""
    from scipy.ndimage import gaussian_filter

    shape = tissue.shape
    spacing = np.asarray(spacing_zyx, dtype=np.float64)
    means = np.asarray(subject.means, dtype=np.float32)
    stds = np.asarray(subject.stds, dtype=np.float32)
    sigma_tex = np.maximum(subject.texture_mm / 2.355 / spacing, 0.0)
    texture = correlated_noise(rng, shape, tuple(sigma_tex))
    hu = means[tissue] + stds[tissue] * texture
    axes = _axes(shape, spacing)
    visceral = tissue == Tissue.VISCERAL
    if visceral.any():     # mesentery: fat with soft-tissue strands (vessels, bowel wall, lymph nodes)
        mix = smooth_field(rng, axes, 12.0, 1.0)[0]
        w = 1.0 / (1.0 + np.exp(-2.5 * (mix - 0.6)))         # mostly fat
        soft = means[Tissue.SOFT] + stds[Tissue.SOFT] * texture
        fat = means[Tissue.FAT] + stds[Tissue.FAT] * texture
        hu[visceral] = (w * soft + (1.0 - w) * fat)[visceral]
    else:
        smooth_field(rng, axes, 12.0, 1.0)                   # keep the random stream aligned
    if subject.calcify > 0:                                  # calcified costal cartilage: bright patches
        cartilage = tissue == Tissue.CARTILAGE
        if cartilage.any():
            spots = smooth_field(rng, axes, 6.0, 1.0)[0]
            threshold = np.quantile(spots[cartilage], 1.0 - subject.calcify)
            calcified = cartilage & (spots > threshold)
            hu[calcified] = np.float32(subject.calcify_hu) + np.float32(60.0) * texture[calcified]
    gas_field = smooth_field(rng, axes, 8.0, 1.0)[0]
    for code, fraction in sorted(subject.gas.items()):
        region = tissue == code
        if fraction <= 0 or not region.any():
            continue
        threshold = np.quantile(gas_field[region], 1.0 - fraction)
        gas = region & (gas_field > threshold)
        hu[gas] = np.float32(-900.0) + np.float32(60.0) * texture[gas]
    # partial-volume blur: in-plane point spread, slice profile along z (FWHM = slice thickness)
    sigma_xy = subject.psf_mm / 2.355 / spacing[1:]
    sigma_z = np.sqrt(max(subject.slice_mm ** 2 - spacing[0] ** 2, 0.0) + subject.psf_mm ** 2) / 2.355 / spacing[0]
    hu = gaussian_filter(hu, sigma=[float(sigma_z), float(sigma_xy[0]), float(sigma_xy[1])], mode="nearest",
                         truncate=3.0)
    hu += np.float32(subject.noise_hu) * correlated_noise(rng, shape, (0.0, 0.5, 0.5))
    if bias_hu > 0:
        hu += smooth_field(rng, axes, 80.0, float(bias_hu))[0]
    return np.clip(hu, -1024.0, 3071.0).astype(np.float32)


def synthesize(structures: np.ndarray, depth: np.ndarray, lut: Sequence[int], spacing_zyx: Sequence[float],
               rng: np.random.Generator, config: Optional[Mapping[str, Any]] = None,
               phase: Optional[str] = None) -> tuple[np.ndarray, Subject]:
    """(HU float32 (D, H, W), drawn subject) for one layout."""
    c = {**SYNTH_DEFAULTS, **dict(config or {})}
    subject = draw_subject(rng, c, phase)
    tissue = tissue_map(structures, depth, lut, subject)
    return render(tissue, spacing_zyx, subject, rng, float(c["bias_hu"])), subject
