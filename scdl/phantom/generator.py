"""Synthesis of one phantom subject: anatomy (codes), label map and CT-like HU image.

Pipeline for case ``index`` of seed ``seed`` (all randomness from ``SeedSequence([seed, index])``, so a case
does not depend on how many cases are generated, and the same seed gives byte-identical arrays):

1. subject parameters: contrast weight, body size and layers, global shift/scale, per-organ jitter;
2. body: superellipse outline, subcutaneous fat, muscle wall with ribs, diaphragm, lung bases, heart;
3. bowel loops with gas (thresholded smooth random fields) in the free abdominal cavity;
4. organs of :mod:`scdl.phantom.anatomy`, each warped by its jitter and a shared smooth deformation,
   painted in order inside its bounding box only; stomach gas above a horizontal fluid level;
5. spine and back muscles (rigid);
6. HU image = partial-volume blur (PSF + voxel box) of the per-structure means + smooth bias field +
   per-structure std x correlated unit noise; rounded to int16 in [-1024, 3071].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scdl.phantom import anatomy as A
from scdl.phantom.config import PhantomConfig
from scdl.phantom.shapes import Primitive, rotation_matrix, superellipse, union_bounds
from scdl.synth.fields import correlated_noise, smooth_field

HU_MIN, HU_MAX = -1024, 3071


@dataclass
class PhantomCase:
    """One generated subject.

    Arrays are in ITK/NumPy order (z, y, x) = (D, H, W) and already laid out for ``direction``.

    Attributes:
        image: int16 HU (D, H, W).
        label: uint8 Synapse labels (D, H, W).
        codes: uint8 structure codes (D, H, W) (see :data:`scdl.phantom.anatomy.CODES`).
        spacing, origin: (x, y, z) in mm; direction: row-major 3x3 (9 floats), ITK convention.
        hu: ``{code: (mean, std)}`` the intensities this subject was drawn with (before blur, bias, noise).
        subject: the drawn subject parameters (JSON-ready).
    """

    image: np.ndarray
    label: np.ndarray
    codes: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    hu: dict[int, tuple[float, float]]
    subject: dict[str, Any] = field(default_factory=dict)

    def to_sitk(self):
        """(image, label) as SimpleITK images with spacing, origin and direction set."""
        import SimpleITK as sitk

        out = []
        for arr in (self.image, self.label):
            img = sitk.GetImageFromArray(arr)
            img.SetSpacing(self.spacing)
            img.SetOrigin(self.origin)
            img.SetDirection(self.direction)
            out.append(img)
        return out[0], out[1]


def case_direction(config: PhantomConfig, index: int) -> str:
    """"LPS" or "RAS" for case ``index`` (``mixed``: odd indices RAS)."""
    if config.direction == "mixed":
        return "RAS" if index % 2 else "LPS"
    return config.direction


def _rng_streams(seed: int, index: int, n: int) -> list[np.random.Generator]:
    """Independent generators per synthesis stage, so that e.g. a grid change keeps the subject's shape."""
    children = np.random.SeedSequence([int(seed), int(index)]).spawn(n)
    return [np.random.default_rng(c) for c in children]


def _index_range(axis: np.ndarray, lo: float, hi: float) -> tuple[int, int]:
    """Indices [i0, i1) of the increasing ``axis`` within [lo, hi]."""
    return int(np.searchsorted(axis, lo, side="left")), int(np.searchsorted(axis, hi, side="right"))


class _Painter:
    """Holds the grid, the code volume and the coordinate fields for one subject."""

    def __init__(self, config: PhantomConfig):
        nx, ny, nz = config.grid_size()
        sx, sy, sz = (float(s) for s in config.spacing)
        # World (patient LPS, mm) coordinates of the voxel centres; the grid is centred on the origin.
        self.world = [(np.arange(n) - (n - 1) / 2.0) * s for n, s in ((nz, sz), (ny, sy), (nx, sx))]
        self.shape = (nz, ny, nx)
        self.codes = np.full(self.shape, A.AIR, dtype=np.uint8)


def _draw_subject(rng: np.random.Generator, config: PhantomConfig) -> dict[str, Any]:
    """All scalar subject parameters, drawn in a fixed order."""
    lo, hi = config.contrast_range
    subject: dict[str, Any] = {
        "contrast_weight": float(rng.uniform(lo, hi)),
        "global_scale": float(np.clip(1.0 + rng.normal(0.0, config.global_scale_sd), 0.8, 1.2)),
        "global_shift_mm": [float(v) for v in rng.normal(0.0, 1.0, 3) * np.asarray(config.global_shift_sd_mm)],
        "body_axes": [float(v) for v in np.clip(1.0 + rng.normal(0.0, config.body_axes_sd, 2), 0.75, 1.25)],
        "fat_mm": float(rng.uniform(*config.subcutaneous_fat_mm)),
        "muscle_mm": float(rng.uniform(*config.wall_muscle_mm)),
        "stomach_gas_fraction": float(rng.uniform(*config.stomach_gas_fraction)),
    }
    organs = {}
    for s in A.ORGANS:
        shift = rng.normal(0.0, 1.0, 3) * config.organ_shift_sd_mm * s.shift
        scale = np.clip(1.0 + rng.normal(0.0, 1.0, 3) * config.organ_scale_sd * s.scale, 0.6, 1.4)
        angles = rng.normal(0.0, 1.0, 3) * config.organ_rotation_sd_deg * s.rotate
        organs[s.name] = {"shift": shift.tolist(), "scale": scale.tolist(), "angles": angles.tolist()}
    subject["organs"] = organs
    names = sorted(config.hu_table)
    offsets = rng.normal(0.0, config.hu_offset_sd, len(names))
    subject["hu_offsets"] = {n: float(o) for n, o in zip(names, offsets)}
    return subject


def _structure_hu(config: PhantomConfig, subject: dict[str, Any]) -> dict[int, tuple[float, float]]:
    """(mean, std) HU per code for this subject's contrast weight and offsets."""
    w = subject["contrast_weight"]
    out = {}
    for code, (_, name) in A.CODES.items():
        entry = config.hu_table[name]
        (m0, s0), (m1, s1) = entry["plain"], entry["contrast"]
        mean = (1.0 - w) * float(m0) + w * float(m1) + subject["hu_offsets"][name]
        out[code] = (float(mean), float((1.0 - w) * float(s0) + w * float(s1)))
    return out


def _organ_transform(struct: A.Structure, params: dict[str, Any]):
    """(centre c, shift t, scale s, rotation R) of the template->subject map p = c + t + s * (R (q - c))."""
    centers = []
    for p in struct.parts:
        centers.append(np.mean(np.asarray(p.points), axis=0) if hasattr(p, "points") else np.asarray(p.center))
    c = np.mean(centers, axis=0)
    return c, np.asarray(params["shift"]), np.asarray(params["scale"]), rotation_matrix(params["angles"])


def _subject_box(prims: tuple[Primitive, ...], grow: float, transform) -> np.ndarray:
    """Box (2, 3) in subject template mm around ``prims`` after the organ's own transform."""
    box = union_bounds(prims, grow)
    c, t, s, r = transform
    corners = np.array([[box[i, 0], box[j, 1], box[k, 2]] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    mapped = c + t + s * ((corners - c) @ r.T)
    return np.stack([mapped.min(axis=0), mapped.max(axis=0)])


def generate_case(config: PhantomConfig, seed: int, index: int) -> PhantomCase:
    """Generate subject ``index`` of the cohort with ``seed`` (deterministic).

    Returns:
        :class:`PhantomCase` with image int16 (D, H, W), label uint8 (D, H, W), codes, geometry, intensities.
    """
    from scipy.ndimage import gaussian_filter

    config.validate()
    r_subject, r_deform, r_bowel, r_bias, r_noise = _rng_streams(seed, index, 5)
    subject = _draw_subject(r_subject, config)
    painter = _Painter(config)
    codes = painter.codes
    wz, wy, wx = painter.world

    # Template coordinates: undo the subject's global shift and scale, and the body-axis factors in x and y,
    # so that the cavity and the organs scale together (separable: 1D per axis).
    sg = subject["global_scale"]
    fa, fb = subject["body_axes"]
    tx, ty, tz = subject["global_shift_mm"]
    sx_, sy_ = sg * fa, sg * fb
    gx, gy, gz = (wx - tx) / sx_, (wy - ty) / sy_, (wz - tz) / sg
    X2, Y2 = gx[None, :], gy[:, None]                                    # (1, W), (H, 1)

    # --- body outline and layers (2D cross-section, extruded along z) -----------------------------
    # Layer thicknesses are physical mm: divide by the template scale of each axis.
    body = A.Body()
    fat, muscle = subject["fat_mm"], subject["muscle_mm"]
    lateral, back = 0.8 * fat, 0.4 * fat
    ca, cb, cy = body.cavity_half_width, body.cavity_half_depth, body.cavity_center_y
    inner_a, inner_b = ca + muscle / sx_, cb + muscle / sy_
    outer_a = inner_a + lateral / sx_
    outer_b = inner_b + (fat + back) / 2.0 / sy_
    outer_cy = cy - (fat - back) / 2.0 / sy_                             # thicker fat anteriorly (-y)
    body2d = superellipse(X2, Y2, outer_a, outer_b, body.power, outer_cy)
    inner2d = superellipse(X2, Y2, inner_a, inner_b, body.power, cy)
    cavity2d = superellipse(X2, Y2, ca, cb, body.power, cy)
    codes[:, body2d] = A.FAT
    wall2d = inner2d & ~cavity2d
    codes[:, wall2d] = A.MUSCLE

    # Diaphragm height per (y, x); abdomen below it, lung bases above it.
    def dome(x0: float, apex: float) -> np.ndarray:
        return apex - body.dome_drop * ((X2 - x0) / 75.0) ** 2 - body.dome_drop_y * ((Y2 - 10.0) / 100.0) ** 2

    zd = np.maximum(np.maximum(dome(*body.right_dome), dome(*body.left_dome)), body.central_tendon_z)
    Z3 = gz[:, None, None]
    cavity3 = np.broadcast_to(cavity2d, painter.shape)
    abdomen = cavity3 & (Z3 < zd - body.diaphragm_mm)
    thorax = cavity3 & (Z3 >= zd)
    codes[cavity3 & ~abdomen & ~thorax] = A.MUSCLE                        # the diaphragm itself
    mediastinum2d = (np.abs(X2) < 35.0) & (Y2 < 45.0)
    codes[thorax & ~mediastinum2d] = A.LUNG
    # Ribs: oblique bands in the muscle wall (lower anteriorly), not in the anterior midline.
    theta = np.arctan2(Y2, X2)                                            # -pi/2 = anterior
    rib_phase = (Z3 + 25.0 * np.sin(theta)) / body.rib_period
    ribs = (np.abs(rib_phase - np.round(rib_phase)) * body.rib_period < body.rib_width / 2.0)
    ribs &= wall2d & (np.abs(theta + np.pi / 2) > np.deg2rad(40.0)) & (Z3 > body.rib_bottom_z)
    codes[ribs] = A.BONE_CORTEX

    # Shared smooth deformation of the organs (template mm), clipped at 3 sd.
    disp = smooth_field(r_deform, (gz, gy, gx), config.deform_scale_mm, config.deform_sd_mm, 3)
    limit = 3.0 * config.deform_sd_mm
    np.clip(disp, -limit, limit, out=disp)
    margin = limit + 1.0

    def block_coords(box: np.ndarray, deform: bool):
        """Index slices and template coordinates (3, d, h, w) of the voxels whose template point may fall in box."""
        pad = margin if deform else 0.0
        (x0, y0, z0), (x1, y1, z1) = box[0] - pad, box[1] + pad
        ix, iy, iz = _index_range(gx, x0, x1), _index_range(gy, y0, y1), _index_range(gz, z0, z1)
        if min(i1 - i0 for i0, i1 in (ix, iy, iz)) <= 0:
            return None, None
        sl = (slice(*iz), slice(*iy), slice(*ix))
        q = np.empty((3, iz[1] - iz[0], iy[1] - iy[0], ix[1] - ix[0]), dtype=np.float32)
        q[0] = gx[ix[0]:ix[1]][None, None, :]
        q[1] = gy[iy[0]:iy[1]][None, :, None]
        q[2] = gz[iz[0]:iz[1]][:, None, None]
        if deform:
            q += disp[(slice(None),) + sl]
        return sl, q

    # Heart (label 0): above the diaphragm, blood intensity.
    sl, q = block_coords(A.HEART_SHAPE.bounds(), deform=False)
    if sl is not None:
        codes[sl][A.HEART_SHAPE.inside(q) & thorax[sl]] = A.HEART

    # --- bowel loops and their gas ----------------------------------------------------------------
    free = abdomen & (codes == A.FAT)
    f_bowel, f_gas = smooth_field(r_bowel, (gz, gy, gx), config.bowel_scale_mm, 1.0, 2)
    # More bowel inferiorly and anteriorly (trend in template mm / 100 mm).
    f_bowel -= (Z3 / 100.0 + Y2 / 200.0).astype(np.float32)
    if free.any() and config.bowel_fill > 0:
        values = f_bowel[free]
        threshold = np.partition(values, int((1.0 - config.bowel_fill) * (values.size - 1)))[
            int((1.0 - config.bowel_fill) * (values.size - 1))]
        bowel = free & (f_bowel > threshold)
        codes[bowel] = A.BOWEL
        if bowel.any() and config.bowel_gas_fraction > 0:
            g = f_gas[bowel]
            k = int((1.0 - config.bowel_gas_fraction) * (g.size - 1))
            gas_threshold = np.partition(g, k)[k]
            codes[bowel & (f_gas > gas_threshold)] = A.BOWEL_GAS

    # --- organs -----------------------------------------------------------------------------------
    clips = {"abdomen": abdomen, "cavity": cavity3, "body": np.broadcast_to(body2d, painter.shape)}

    def paint(struct: A.Structure, params: dict[str, Any] | None) -> None:
        rigid = params is None
        transform = (np.zeros(3), np.zeros(3), np.ones(3), np.eye(3)) if rigid else _organ_transform(struct, params)
        grow = struct.halo_mm
        box = _subject_box(struct.parts, grow, transform)
        sl, q = block_coords(box, deform=struct.deform)
        if sl is None:
            return
        if not rigid:
            c, t, s, r = transform
            cc = c.reshape(3, 1, 1, 1).astype(np.float32)
            local = (q - cc - t.reshape(3, 1, 1, 1).astype(np.float32)) / s.reshape(3, 1, 1, 1).astype(np.float32)
            q = np.einsum("ji,j...->i...", r.astype(np.float32), local) + cc        # R^T applied
        inside = np.zeros(q.shape[1:], dtype=bool)
        for prim in struct.parts:
            inside |= prim.inside(q)
        for prim in struct.subtract:
            inside &= ~prim.inside(q)
        clip = clips.get(struct.clip)
        region = codes[sl]
        if clip is not None:
            inside &= clip[sl]
        if grow > 0:
            halo = np.zeros_like(inside)
            for prim in struct.parts:
                halo |= prim.inside(q, grow)
            if clip is not None:
                halo &= clip[sl]
            region[halo & ~inside & (region != A.BONE_CORTEX)] = A.FAT
        region[inside] = struct.code
        if struct.code == 7 and inside.any():
            # Gas rises anteriorly (supine): the most anterior share of the stomach is gas.
            y = np.broadcast_to(wy[sl[1]][None, :, None], inside.shape)[inside]
            k = int(subject["stomach_gas_fraction"] * (y.size - 1))
            if subject["stomach_gas_fraction"] > 0:
                level = np.partition(y, k)[k]
                region[inside & (wy[sl[1]][None, :, None] <= level)] = A.STOMACH_GAS

    for struct in A.ORGANS:
        paint(struct, subject["organs"][struct.name])
    for struct in A.SPINE:
        paint(struct, None)

    # --- intensities ------------------------------------------------------------------------------
    hu = _structure_hu(config, subject)
    lut_mean = np.zeros(256, dtype=np.float32)
    lut_std = np.zeros(256, dtype=np.float32)
    lut_label = np.zeros(256, dtype=np.uint8)
    for code, (mean, std) in hu.items():
        lut_mean[code], lut_std[code] = mean, std
        lut_label[code] = A.CODES[code][0]
    spacing_zyx = np.asarray(config.spacing, dtype=np.float64)[::-1]
    pv_sigma = np.sqrt(spacing_zyx ** 2 / 12.0 + config.psf_sigma_mm ** 2) / spacing_zyx
    image = gaussian_filter(lut_mean[codes], sigma=pv_sigma.tolist(), mode="nearest", truncate=3.0)
    if config.bias_sd > 0:
        image += smooth_field(r_bias, (wz, wy, wx), config.bias_scale_mm, config.bias_sd, 1)[0]
    noise_sigma = (config.noise_correlation_mm / spacing_zyx).tolist()
    noise = correlated_noise(r_noise, painter.shape, noise_sigma)
    noise *= lut_std[codes]
    image += noise
    np.rint(image, out=image)
    np.clip(image, HU_MIN, HU_MAX, out=image)
    image = image.astype(np.int16)
    label = lut_label[codes]

    # --- layout and geometry ----------------------------------------------------------------------
    orientation = case_direction(config, index)
    origin = [float(wx[0]), float(wy[0]), float(wz[0])]
    direction = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    if orientation == "RAS":
        image, label, codes = (np.ascontiguousarray(arr[:, ::-1, ::-1]) for arr in (image, label, codes))
        origin = [float(wx[-1]), float(wy[-1]), float(wz[0])]
        direction = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    subject["orientation"] = orientation
    return PhantomCase(image=image, label=label, codes=codes, spacing=tuple(float(s) for s in config.spacing),
                       origin=tuple(origin), direction=direction, hu=hu, subject=subject)
