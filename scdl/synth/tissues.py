"""Tissues of synthetic CT and their intensities (HU) per contrast phase.

Every named structure of a label table is assigned a :class:`Tissue` by its normalised name
(:func:`tissue_for_name`), so TotalSegmentator v2, Synapse, AMOS or any colour-table CSV work alike.
:data:`HU` gives, per tissue and phase, the range from which one subject's mean is drawn (uniformly) and the
within-tissue standard deviation. Sources (the ``source`` field; table in docs/synthesis.md):

- ``A``: measured on patient A (non-contrast look) by ``bench/measure_hu.py`` (scdl.phantom.hu_table);
- ``B``: measured on patient B (portal-venous phase), same script;
- ``lit``: typical values of the radiology literature (e.g. liver 55 / 70 / 105 HU native / arterial /
  portal; aorta 250-350 HU arterial; renal cortex 150-200 HU in the corticomedullary phase). These are
  approximate and given as wide ranges, not measurements of this project.

Each range brackets the measured value(s) of its row, so a synthesised subject can look like A or like B.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from scdl.labels.names import normalize_name
from scdl.labels.protocol import LabelTableLike


class Tissue(IntEnum):
    """Tissue codes of a synthesis (uint8). ``BODY`` = unlabeled voxel inside the body (split by depth)."""

    AIR = 0
    BODY = 1
    FAT = 2
    MUSCLE = 3
    VISCERAL = 4
    SOFT = 5
    LIVER = 6
    SPLEEN = 7
    KIDNEY = 8            # split into cortex / medulla by depth
    KIDNEY_CORTEX = 9
    KIDNEY_MEDULLA = 10
    KIDNEY_CYST = 11
    GALLBLADDER = 12
    PANCREAS = 13
    ADRENAL = 14
    STOMACH = 15
    BOWEL = 16
    ESOPHAGUS = 17
    ARTERY = 18
    VEIN = 19
    PORTAL = 20
    HEART = 21
    LUNG = 22
    AIRWAY = 23
    BONE = 24             # cancellous bone; its outer ``bone_cortex_mm`` becomes BONE_CORTEX
    BONE_CORTEX = 25
    CARTILAGE = 26
    SPINAL_CORD = 27
    BRAIN = 28
    THYROID = 29
    BLADDER = 30
    PROSTATE = 31


N_TISSUES = len(Tissue)
PHASES: tuple[str, ...] = ("native", "arterial", "portal")


@dataclass(frozen=True)
class TissueHU:
    """HU of one tissue: per phase the (low, high) range of a subject's mean, and the within-tissue std."""

    native: tuple[float, float]
    arterial: tuple[float, float]
    portal: tuple[float, float]
    std: float
    source: str

    def mean_range(self, phase: str) -> tuple[float, float]:
        return getattr(self, phase)


def _same(r: tuple[float, float], std: float, source: str) -> TissueHU:
    return TissueHU(r, r, r, std, source)


#: HU per tissue and phase (see module docstring for the sources).
HU: dict[Tissue, TissueHU] = {
    Tissue.AIR: _same((-1010.0, -990.0), 15.0, "physics"),
    Tissue.FAT: _same((-110.0, -75.0), 25.0, "A -92.3±26.5, B -77.0±26.7"),
    Tissue.MUSCLE: TissueHU((20.0, 55.0), (25.0, 60.0), (25.0, 65.0), 26.0, "A 23.9±27.8, B 27.6±26.9, lit 40-60"),
    Tissue.VISCERAL: _same((-100.0, -40.0), 35.0, "lit: mesenteric fat with vessels and bowel wall"),
    Tissue.SOFT: TissueHU((20.0, 50.0), (30.0, 70.0), (40.0, 80.0), 25.0, "lit: unenhanced soft tissue 20-50"),
    Tissue.LIVER: TissueHU((40.0, 65.0), (60.0, 85.0), (85.0, 125.0), 15.0, "A 46.4±12.9, B 90.9±18.8, lit 55/70/105"),
    Tissue.SPLEEN: TissueHU((35.0, 65.0), (90.0, 140.0), (80.0, 130.0), 15.0,
                            "A 34.9±12.3, B 81.2±17.1, lit; native 63 HU on a real CT (issue 27)"),
    Tissue.KIDNEY_CORTEX: TissueHU((15.0, 40.0), (140.0, 220.0), (140.0, 255.0), 20.0,
                                   "A 13.4-22.6, lit; late portal 190-255 HU on real CT (issue 27)"),
    Tissue.KIDNEY_MEDULLA: TissueHU((15.0, 40.0), (50.0, 90.0), (120.0, 260.0), 20.0,
                                    "A 13.4-22.6, lit; late portal: medulla brighter than cortex, up to 255 HU (issue 27)"),
    Tissue.KIDNEY_CYST: _same((0.0, 15.0), 10.0, "lit: simple cyst 0-20"),
    Tissue.GALLBLADDER: _same((0.0, 20.0), 11.0, "A 3.3±11.2, lit: bile 0-20"),
    Tissue.PANCREAS: TissueHU((0.0, 45.0), (90.0, 130.0), (60.0, 100.0), 25.0, "A 2.5±26.8, B 61.0±29.6, lit 40/110/80"),
    Tissue.ADRENAL: TissueHU((0.0, 35.0), (50.0, 90.0), (40.0, 80.0), 22.0, "A 2.4-19.3, B 43.7±35.7, lit"),
    Tissue.STOMACH: TissueHU((25.0, 45.0), (40.0, 70.0), (50.0, 80.0), 30.0, "A 33.5±32.6, B 57.2±42.9"),
    Tissue.BOWEL: TissueHU((-15.0, 35.0), (10.0, 50.0), (15.0, 60.0), 40.0, "A -11.0±51.1, B -20.2±66.8 (with gas)"),
    Tissue.ESOPHAGUS: TissueHU((30.0, 50.0), (40.0, 70.0), (45.0, 80.0), 25.0, "lit: muscular tube (as muscle)"),
    Tissue.ARTERY: TissueHU((35.0, 50.0), (220.0, 380.0), (130.0, 190.0), 20.0, "A 43.5±14.1, B 154.4±36.6, lit 250-350 arterial"),
    Tissue.VEIN: TissueHU((35.0, 50.0), (60.0, 120.0), (95.0, 150.0), 15.0, "A 42.3±12.6, B 98.0±12.3, lit"),
    Tissue.PORTAL: TissueHU((35.0, 50.0), (70.0, 130.0), (130.0, 210.0), 13.0,
                            "A 41.0±11.6, B 140.2±12.9, lit; 199 HU on a real portal-venous CT (issue 27)"),
    Tissue.HEART: TissueHU((35.0, 50.0), (200.0, 350.0), (120.0, 170.0), 25.0, "lit: blood pool"),
    Tissue.LUNG: _same((-860.0, -740.0), 60.0, "A -787.8±67.6"),
    Tissue.AIRWAY: _same((-1000.0, -900.0), 30.0, "physics"),
    Tissue.BONE: _same((110.0, 220.0), 90.0, "A 126.9±120.5, B 167.5±103.1 (cancellous)"),
    Tissue.BONE_CORTEX: _same((150.0, 450.0), 120.0, "A 257.7±156.2, B 322.7±196.6 (partial volume), lit up to 1000; "
                                                     "real ribs at 3 mm: A median 223 HU"),
    Tissue.CARTILAGE: _same((80.0, 250.0), 60.0, "lit: partly calcified costal cartilage"),
    Tissue.SPINAL_CORD: _same((15.0, 40.0), 20.0, "A 2.7±28.0, B 27.9±20.3"),
    Tissue.BRAIN: _same((25.0, 45.0), 10.0, "lit"),
    Tissue.THYROID: TissueHU((80.0, 120.0), (130.0, 200.0), (120.0, 180.0), 20.0, "lit: iodine-rich"),
    Tissue.BLADDER: _same((0.0, 20.0), 10.0, "lit: urine"),
    Tissue.PROSTATE: TissueHU((30.0, 45.0), (50.0, 90.0), (60.0, 90.0), 15.0, "lit"),
}
# Tissues split by depth have no HU of their own: their parts do. BONE is not among them: its deep part is the
# cancellous bone (HU row BONE); until 2026-12-06 it was listed here, so cancellous bone was rendered as generic
# soft tissue (synthesised vertebrae median 69-111 HU against 174 HU on patient A's real CT).
SPLIT_TISSUES = (Tissue.BODY, Tissue.KIDNEY)

#: Fraction of gas voxels per subject, (low, high): measured on A and B (scdl.phantom.hu_table).
GAS_FRACTION: dict[Tissue, tuple[float, float]] = {
    Tissue.STOMACH: (0.0, 0.2),      # A 0.069, B 0.135
    Tissue.BOWEL: (0.1, 0.7),        # A 0.192, B 0.715
    Tissue.ESOPHAGUS: (0.0, 0.1),
}

#: (keyword in the normalised name, tissue), first match wins: order matters (cyst before kidney, portal
#: before vein, spinal cord before spine, gallbladder before bladder).
NAME_RULES: tuple[tuple[str, Tissue], ...] = (
    ("cyst", Tissue.KIDNEY_CYST),
    ("kidney", Tissue.KIDNEY),
    ("adrenal", Tissue.ADRENAL),
    ("liver", Tissue.LIVER),
    ("spleen", Tissue.SPLEEN),
    ("gallbladder", Tissue.GALLBLADDER),
    ("gall bladder", Tissue.GALLBLADDER),
    ("pancrea", Tissue.PANCREAS),
    ("stomach", Tissue.STOMACH),
    ("esophag", Tissue.ESOPHAGUS),
    ("oesophag", Tissue.ESOPHAGUS),
    ("duoden", Tissue.BOWEL),
    ("bowel", Tissue.BOWEL),
    ("colon", Tissue.BOWEL),
    ("rectum", Tissue.BOWEL),
    ("intestin", Tissue.BOWEL),
    ("portal", Tissue.PORTAL),
    ("splenic vein", Tissue.PORTAL),
    ("mesenteric vein", Tissue.PORTAL),
    ("pulmonary vein", Tissue.HEART),
    ("atrial appendage", Tissue.HEART),
    ("heart", Tissue.HEART),
    ("aorta", Tissue.ARTERY),
    ("arter", Tissue.ARTERY),
    ("trunk", Tissue.ARTERY),
    ("vena", Tissue.VEIN),
    ("vein", Tissue.VEIN),
    ("cava", Tissue.VEIN),
    ("lung", Tissue.LUNG),
    ("trachea", Tissue.AIRWAY),
    ("bronch", Tissue.AIRWAY),
    ("spinal cord", Tissue.SPINAL_CORD),
    ("cartilage", Tissue.CARTILAGE),
    ("vertebra", Tissue.BONE),
    ("rib", Tissue.BONE),
    ("sacrum", Tissue.BONE),
    ("hip", Tissue.BONE),
    ("femur", Tissue.BONE),
    ("humerus", Tissue.BONE),
    ("scapula", Tissue.BONE),
    ("clavic", Tissue.BONE),
    ("sternum", Tissue.BONE),
    ("skull", Tissue.BONE),
    ("bone", Tissue.BONE),
    ("spine", Tissue.BONE),
    ("brain", Tissue.BRAIN),
    ("thyroid", Tissue.THYROID),
    ("bladder", Tissue.BLADDER),
    ("prostate", Tissue.PROSTATE),
    ("uterus", Tissue.PROSTATE),
    ("gluteus", Tissue.MUSCLE),
    ("autochthon", Tissue.MUSCLE),
    ("psoas", Tissue.MUSCLE),
    ("muscle", Tissue.MUSCLE),
    ("fat", Tissue.FAT),
)


def tissue_for_name(name: str) -> Tissue:
    """The tissue of a structure name (any table's spelling); unknown names are generic soft tissue."""
    key = " " + normalize_name(name).replace("_", " ") + " "
    for word, tissue in NAME_RULES:
        if word in key:
            return tissue
    return Tissue.SOFT


def tissue_lut(table: LabelTableLike) -> "list[int]":
    """Tissue code per label value of ``table`` (index = value; 0 = BODY; values not in the table: SOFT)."""
    lut = [int(Tissue.SOFT)] * int(table.num_classes)
    lut[0] = int(Tissue.BODY)
    for entry in table.entries:
        if int(entry.value) != 0:
            lut[int(entry.value)] = int(tissue_for_name(entry.name))
    return lut
