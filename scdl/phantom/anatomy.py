"""The phantom's template anatomy: an average upper abdomen in LPS patient coordinates (mm).

Frame: x towards the patient's LEFT, y towards POSTERIOR, z towards SUPERIOR (DICOM/ITK LPS); the origin
is the centre of the body cross-section at about the L1 level. So the liver lies at negative x (patient's
right), the spleen at positive x and positive y (left, posterior), the kidneys posterior beside the spine,
the aorta left-anterior of the vertebral body and the inferior vena cava to its right.

Sizes follow typical adult anatomy and the volumes measured on patient A. Over 30 subjects of seed 0 at
2.5 mm (docs/phantom.md has the table) the median liver is 1.05 L, the kidneys about 115 mL and the adrenal
glands about 3.6 mL: the largest/smallest organ voxel ratio is 208..542 (median 333).

Each structure has a *code* (an index into the intensity table of a case). Codes 1..13 are the Synapse
organs and equal their label values; codes >= 20 are unlabelled tissues (label 0).
"""

from __future__ import annotations

from dataclasses import dataclass

from scdl.phantom.shapes import Ellipsoid, Primitive, Tube

#: Synapse label value -> organ name (Resources/Labels/synapse.csv numbering).
SYNAPSE_ORGANS: dict[int, str] = {
    1: "spleen",
    2: "right_kidney",
    3: "left_kidney",
    4: "gallbladder",
    5: "esophagus",
    6: "liver",
    7: "stomach",
    8: "aorta",
    9: "inferior_vena_cava",
    10: "portal_and_splenic_veins",
    11: "pancreas",
    12: "right_adrenal_gland",
    13: "left_adrenal_gland",
}

# Tissue codes (label 0 unless stated).
AIR, FAT, MUSCLE, BONE, BONE_CORTEX, SPINAL_CORD, LUNG, BOWEL, BOWEL_GAS, STOMACH_GAS, HEART = range(20, 31)

#: code -> (label value, name of the HU-table entry that gives its intensity).
CODES: dict[int, tuple[int, str]] = {
    **{value: (value, name) for value, name in SYNAPSE_ORGANS.items()},
    AIR: (0, "air"),
    FAT: (0, "fat"),
    MUSCLE: (0, "muscle"),
    BONE: (0, "bone"),
    BONE_CORTEX: (0, "bone_cortex"),
    SPINAL_CORD: (0, "spinal_cord"),
    LUNG: (0, "lung"),
    BOWEL: (0, "bowel"),
    BOWEL_GAS: (0, "air"),       # bowel gas: air intensity
    STOMACH_GAS: (7, "air"),     # gas in the stomach is still stomach
    HEART: (0, "aorta"),         # heart chambers: blood, the aorta's intensity
}


@dataclass(frozen=True)
class Structure:
    """One painted structure of the template.

    Attributes:
        name: for messages and docs.
        code: see :data:`CODES`.
        parts: union of primitives (template mm).
        subtract: primitives removed from the union.
        clip: "abdomen" (inside the muscle wall and below the diaphragm), "cavity" (inside the muscle wall)
            or "none".
        halo_mm: a rim of fat this thick is painted around the structure first (perirenal fat, ...).
        shift, scale, rotate: multipliers of the configured per-organ variability (0 = rigid with the body).
        deform: whether the smooth elastic deformation applies.
    """

    name: str
    code: int
    parts: tuple[Primitive, ...]
    subtract: tuple[Primitive, ...] = ()
    clip: str = "abdomen"
    halo_mm: float = 0.0
    shift: float = 1.0
    scale: float = 1.0
    rotate: float = 1.0
    deform: bool = True


E, T = Ellipsoid, Tube


def _kidney(side: int, code: int, z: float) -> Structure:
    """Kidney at x = side * 68 mm; long axis tilted so the upper pole is medial; hilum facing antero-medially."""
    cx = 68.0 * side
    return Structure(
        name=SYNAPSE_ORGANS[code], code=code,
        parts=(E((cx, 58.0, z), (26.0, 23.0, 50.0), (0.0, 12.0 * side, -25.0 * side)),),
        subtract=(E((cx - 24.0 * side, 46.0, z), (10.0, 9.0, 20.0)),),
        halo_mm=5.0,
    )


def _adrenal(side: int, code: int, z: float) -> Structure:
    """Adrenal gland: two thin limbs (an inverted V) above and medial to the kidney's upper pole."""
    cx = 38.0 * side
    return Structure(
        name=SYNAPSE_ORGANS[code], code=code,
        parts=(E((cx, 44.0, z + 8.0), (4.0, 10.0, 16.0), (0.0, 0.0, -20.0 * side)),
               E((cx + 4.0 * side, 50.0, z), (4.0, 8.0, 14.0), (0.0, 0.0, 30.0 * side))),
        halo_mm=5.0, scale=1.2,
    )


#: The template in paint order: a later structure overwrites an earlier one where they overlap.
ORGANS: tuple[Structure, ...] = (
    Structure("liver", 6,
              parts=(E((-62.0, 5.0, 35.0), (68.0, 78.0, 72.0)),
                     E((0.0, -45.0, 58.0), (58.0, 38.0, 32.0), (0.0, 0.0, -15.0)))),
    Structure("stomach", 7,
              parts=(T(((48.0, 5.0, 72.0), (52.0, -20.0, 48.0), (40.0, -45.0, 22.0), (15.0, -58.0, 5.0),
                        (-10.0, -52.0, 0.0), (-25.0, -40.0, 2.0)),
                       (26.0, 24.0, 20.0, 16.0, 12.0, 9.0)),)),
    Structure("spleen", 1,
              parts=(E((86.0, 30.0, 45.0), (24.0, 50.0, 46.0), (15.0, 0.0, 40.0)),), halo_mm=2.0),
    Structure("gallbladder", 4,
              parts=(E((-42.0, -48.0, 0.0), (16.0, 17.0, 38.0), (35.0, 0.0, 0.0)),)),
    Structure("psoas_right", MUSCLE,
              parts=(T(((-22.0, 48.0, 30.0), (-35.0, 42.0, -40.0), (-48.0, 35.0, -110.0)), (6.0, 16.0, 22.0)),),
              scale=0.5),
    Structure("psoas_left", MUSCLE,
              parts=(T(((22.0, 48.0, 30.0), (35.0, 42.0, -40.0), (48.0, 35.0, -110.0)), (6.0, 16.0, 22.0)),),
              scale=0.5),
    _kidney(-1, 2, -28.0),
    _kidney(+1, 3, -15.0),
    Structure("pancreas", 11,
              parts=(T(((-28.0, -22.0, -12.0), (-5.0, -28.0, 2.0), (20.0, -20.0, 10.0), (45.0, 0.0, 20.0),
                        (65.0, 22.0, 30.0)),
                       (16.0, 11.0, 10.0, 9.0, 8.0)),),
              halo_mm=3.0),
    _adrenal(-1, 12, 32.0),
    _adrenal(+1, 13, 22.0),
    Structure("portal_and_splenic_veins", 10,
              parts=(T(((70.0, 34.0, 32.0), (45.0, 12.0, 20.0), (20.0, -6.0, 10.0), (-5.0, -14.0, 4.0),
                        (-25.0, -5.0, 20.0), (-42.0, 5.0, 36.0)),
                       (4.5, 4.5, 5.0, 6.0, 6.5, 6.0)),),
              rotate=0.5),
    Structure("inferior_vena_cava", 9,
              parts=(T(((-22.0, 20.0, -110.0), (-24.0, 18.0, 0.0), (-30.0, 22.0, 60.0), (-25.0, 15.0, 110.0)),
                       (10.0, 11.0, 12.0, 12.0)),),
              clip="cavity", halo_mm=2.0, rotate=0.3),
    Structure("aorta", 8,
              parts=(T(((10.0, 14.0, 110.0), (12.0, 18.0, 0.0), (14.0, 16.0, -110.0)), (11.5, 11.0, 10.0)),),
              clip="cavity", halo_mm=2.0, rotate=0.3),
    Structure("esophagus", 5,
              parts=(T(((2.0, -2.0, 115.0), (6.0, -5.0, 85.0), (18.0, -10.0, 65.0), (35.0, -8.0, 55.0)),
                       (7.0, 7.0, 7.5, 8.0)),),
              clip="cavity", halo_mm=2.0, rotate=0.3),
)

#: Spine and back muscles: painted last, rigid with the body (no organ jitter, no deformation).
SPINE: tuple[Structure, ...] = (
    Structure("paraspinal_right", MUSCLE, parts=(T(((-30.0, 90.0, -130.0), (-30.0, 90.0, 130.0)), (18.0, 18.0)),),
              clip="body", shift=0.0, scale=0.0, rotate=0.0, deform=False),
    Structure("paraspinal_left", MUSCLE, parts=(T(((30.0, 90.0, -130.0), (30.0, 90.0, 130.0)), (18.0, 18.0)),),
              clip="body", shift=0.0, scale=0.0, rotate=0.0, deform=False),
    Structure("vertebral_cortex", BONE_CORTEX,
              parts=(E((0.0, 48.0, 0.0), (21.0, 17.0, 1.0e4)), E((0.0, 80.0, 0.0), (20.0, 13.0, 1.0e4)),
                     T(((0.0, 88.0, -1.0e4), (0.0, 88.0, 1.0e4)), (5.0, 5.0)),
                     T(((0.0, 100.0, -1.0e4), (0.0, 100.0, 1.0e4)), (4.0, 4.0))),
              clip="body", shift=0.0, scale=0.0, rotate=0.0, deform=False),
    Structure("vertebral_body", BONE, parts=(E((0.0, 48.0, 0.0), (18.0, 14.0, 1.0e4)),),
              clip="body", shift=0.0, scale=0.0, rotate=0.0, deform=False),
    Structure("spinal_canal", SPINAL_CORD, parts=(E((0.0, 77.0, 0.0), (9.0, 8.0, 1.0e4)),),
              clip="body", shift=0.0, scale=0.0, rotate=0.0, deform=False),
)

#: Heart (label 0, blood intensity) above the diaphragm, left-anterior.
HEART_SHAPE = E((10.0, -30.0, 135.0), (65.0, 55.0, 60.0), (0.0, 0.0, 20.0))


@dataclass(frozen=True)
class Body:
    """Body layers of the template (mm). The cavity inside the muscle wall holds the organs; the subject's
    muscle wall and subcutaneous fat are added outside it (so fat makes the body larger, not the cavity
    smaller), and the subject's body-axis factors scale cavity and organs together (see generator)."""

    cavity_half_width: float = 122.0   # left-right semi-axis of the cavity inside the muscle wall
    cavity_half_depth: float = 96.0    # antero-posterior semi-axis of that cavity
    cavity_center_y: float = 6.0       # the cavity reaches further back than forward (kidneys, spine)
    power: float = 2.2             # superellipse exponent (2 = ellipse; larger = boxier)
    # Diaphragm: two domes z = apex - drop * ((x - x0) / 75)^2 - drop_y * ((y - 10) / 100)^2, floor central.
    right_dome: tuple[float, float] = (-65.0, 92.0)   # (x0, apex z)
    left_dome: tuple[float, float] = (65.0, 84.0)
    dome_drop: float = 40.0
    dome_drop_y: float = 32.0
    central_tendon_z: float = 70.0
    diaphragm_mm: float = 4.0
    # Ribs: bands in the muscle wall above this height, every ``rib_period`` mm, ``rib_width`` thick.
    rib_bottom_z: float = -10.0
    rib_period: float = 32.0
    rib_width: float = 9.0
