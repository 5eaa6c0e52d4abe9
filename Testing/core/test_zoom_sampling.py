"""In-plane zoom of training patches (``sampling.zoom_prob`` / ``zoom_range``, scdl.training.sampling)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from scdl.labels.table import LabelTable
from scdl.synth.layout import make_layout
from scdl.synth.tissues import tissue_lut
from scdl.training.sampling import draw_zoom, resize, sample_patch, zoom_box

PATCH = (8, 32, 32)
RIGID = {"elastic_mm": 0.0, "shrink_prob": 0.0}     # synthesis without deformation: sizes exact


class _ImageCase:
    """A real-CT stand-in: 16 x 64 x 64, a 16 x 16 square organ (class 1) in the middle of every slice."""

    def __init__(self):
        self.shape = (16, 64, 64)
        self.labeled = True
        self.anatomy = None
        self.label = np.zeros(self.shape, np.uint8)
        self.label[:, 24:40, 24:40] = 1
        self.image = np.where(self.label == 1, 1.0, 0.0).astype(np.float32)
        self.present = [1]

    def locations(self, cls):
        return np.array([np.ravel_multi_index((8, 32, 32), self.shape)])


class _AnatomyCase(_ImageCase):
    """The same square as an anatomy layout (TotalSegmentator liver inside soft tissue), synthesised per patch."""

    def __init__(self):
        super().__init__()
        table = LabelTable.load("totalsegmentator_v2")
        liver = next(int(e.value) for e in table.entries if e.name == "liver")
        structures = np.where(self.label == 1, liver, 0).astype(np.int32)
        layout = make_layout(structures, (3.0, 3.0, 3.0))
        self.structures, self.depth = layout.structures, layout.depth
        self.anatomy = {"lut": tissue_lut(table), "spacing_zyx": [3.0, 3.0, 3.0], "window": [-125.0, 275.0],
                        "scale": [0.0, 1.0]}


def test_zoom_off_draws_nothing_and_on_stays_in_range():
    rng, ref = np.random.default_rng(3), np.random.default_rng(3)
    assert draw_zoom(rng, 0.0, (0.7, 1.25)) == 1.0
    assert rng.random() == ref.random()                          # the stream of earlier runs is unchanged
    draws = np.array([draw_zoom(np.random.default_rng(s), 1.0, (0.7, 1.25)) for s in range(4000)])
    assert draws.min() >= 0.7 and draws.max() <= 1.25
    assert np.median(draws) == pytest.approx(np.sqrt(0.7 * 1.25), abs=0.02)        # log-uniform
    half = np.array([draw_zoom(np.random.default_rng(s), 0.5, (0.7, 1.25)) for s in range(4000)])
    assert np.mean(half == 1.0) == pytest.approx(0.5, abs=0.03)


def test_zoom_box_keeps_the_centre_and_the_depth():
    assert zoom_box((2, 10, 10), PATCH, 1.0) == ((2, 10, 10), PATCH)
    start, size = zoom_box((2, 10, 10), PATCH, 0.5)
    assert size == (8, 16, 16) and start == (2, 18, 18)            # centre 26 kept
    start, size = zoom_box((2, 10, 10), PATCH, 1.5)
    assert size == (8, 48, 48) and start == (2, 2, 2)


def test_resize_linear_and_nearest():
    ramp = np.tile(np.arange(4, dtype=np.float32), (1, 4, 1))     # (1, 4, 4): 0 1 2 3 along W
    up = resize(ramp, (1, 8, 8), 1)
    assert up.shape == (1, 8, 8) and up[0, 0, 0] == 0.0 and up[0, 0, -1] == 3.0
    assert np.all(np.diff(up[0, 0]) >= 0)
    labels = resize(np.arange(16, dtype=np.uint8).reshape(1, 4, 4), (1, 8, 8), 0)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == set(range(16))


@pytest.mark.parametrize("case_type", [_ImageCase, _AnatomyCase])
def test_zoom_changes_the_organ_size_the_patch_shows(case_type):
    case = case_type()
    sizes = {}
    for low in (0.5, 1.0, 1.5):
        image, label, cls = sample_patch(case, PATCH, np.random.default_rng(0), 1.0, synth=RIGID,
                                         zoom_prob=1.0, zoom_range=(low, low))
        assert cls == 1 and image.shape == PATCH and label.shape == PATCH and image.dtype == np.float32
        sizes[low] = int((label[4] == 1).sum())
        if case.anatomy is None:                                    # the image is resampled with the labels
            inside, outside = image[4][label[4] == 1], image[4][label[4] == 0]
            assert inside.mean() > 0.9 and (outside.size == 0 or outside.mean() < 0.1)
    assert sizes[1.0] == 16 * 16
    assert sizes[0.5] == 32 * 32                                   # zoom in: the square fills the patch
    assert sizes[1.5] == pytest.approx(256 / 1.5 ** 2, rel=0.15)   # zoom out: smaller


def test_anatomy_zoom_synthesises_at_the_zoomed_voxel_size(monkeypatch):
    import scdl.synth.engine as engine

    seen = []
    real = engine.synthesize

    def spy(structures, depth, lut, spacing, rng, config):
        seen.append(tuple(spacing))
        return real(structures, depth, lut, spacing, rng, config)

    monkeypatch.setattr(engine, "synthesize", spy)
    sample_patch(_AnatomyCase(), PATCH, np.random.default_rng(0), 1.0, zoom_prob=1.0, zoom_range=(0.5, 0.5))
    assert seen == [(3.0, 1.5, 1.5)]


def test_config_refuses_bad_zoom():
    from scdl.errors import ScdlError
    from scdl.training.config import DEFAULTS, validate_config

    assert DEFAULTS["sampling"]["zoom_prob"] == 0.0                  # off by default (the paper has no zoom)
    for key, value in (("zoom_prob", 1.2), ("zoom_range", [1.3, 0.7]), ("zoom_range", [0, 1]),
                       ("zoom_range", 0.8)):
        config = copy.deepcopy(DEFAULTS)
        config["sampling"][key] = value
        with pytest.raises(ScdlError, match=key):
            validate_config(config)
