"""``Preprocessor``: CT on its own grid <-> network input on the model grid, with an exact inverse.

Forward: reorient to the card's orientation (exact permutation/flips), resample to the model spacing or the
fixed size (linear for CT, one SimpleITK pass straight from the input, no float64 copy of the volume),
window + scale in place (float32), pad to at least the patch size. When the model grid is only a
permutation/flip of the input grid, no interpolation happens at all.
Inverse: crop the padding, then map the array back onto the ORIGINAL input grid (nearest neighbour for
labels, linear for float maps) in one resampling pass, or by the inverse permutation/flips when exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np

from scdl.errors import ScdlError
from scdl.processing.config import PreprocessConfig
from scdl.processing.grid import Grid
from scdl.processing.intensity import window_and_scale
from scdl.processing.orientation import Reorientation, reorient_grid, reorientation_for
from scdl.processing.padding import crop, pad, padding_for
from scdl.processing.resample import grid_for_size, grid_for_spacing, resample_to_grid


@dataclass(frozen=True)
class PreprocessContext:
    """What :meth:`Preprocessor.forward` did to one image, needed to map results back (picklable).

    Attributes:
        input_grid: the original image's grid.
        reorientation: permutation/flips from the input to ``oriented_grid``.
        oriented_grid: the input grid in the model's orientation (same voxels).
        model_grid: the resampled grid (before padding); shape (D, H, W) = ``model_grid.shape``.
        resampled: False when ``model_grid`` equals ``oriented_grid`` (no interpolation, exact inverse).
        padding: ((before, after) for D, H, W) added around the model grid.
    """

    input_grid: Grid
    reorientation: Reorientation
    oriented_grid: Grid
    model_grid: Grid
    resampled: bool
    padding: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape (D, H, W) of the network input, padding included."""
        return tuple(n + b + a for n, (b, a) in zip(self.model_grid.shape, self.padding))

    @property
    def padded_grid(self) -> Grid:
        """Grid of the padded network input (the model grid extended by the padding)."""
        g = self.model_grid
        before_xyz = [self.padding[2 - k][0] for k in range(3)]
        origin = g.index_to_physical([-b for b in before_xyz])
        return Grid(size=self.shape[::-1], spacing=g.spacing, origin=tuple(float(v) for v in origin),
                    direction=g.direction)


def _label_pixel_type(max_value: int, min_value: int):
    import SimpleITK as sitk

    if min_value >= 0 and max_value < 256:
        return np.uint8, sitk.sitkUInt8
    if min_value >= 0 and max_value < 65536:
        return np.uint16, sitk.sitkUInt16
    return np.int32, sitk.sitkInt32


class Preprocessor:
    """Model-card preprocessing (see :class:`~scdl.processing.config.PreprocessConfig`).

    Example::

        pre = Preprocessor(package.card["preprocessing"])
        arr, ctx = pre.forward(ct)               # float32 (D, H, W), z first
        labels_img = pre.inverse_labels(pred, ctx)  # SimpleITK image on ct's grid
    """

    def __init__(self, config: Union[PreprocessConfig, dict[str, Any]]):
        if isinstance(config, dict):
            try:
                config = PreprocessConfig.from_card(config)
            except ValueError as err:
                raise ScdlError(f"invalid model-card preprocessing: {err}",
                                fix="correct the model card (see docs/model_package.md).") from err
        self.config: PreprocessConfig = config

    @property
    def patch_size(self) -> tuple[int, int, int]:
        """Patch size in network array order (D, H, W)."""
        return self.config.patch_size_dhw

    # -- geometry -------------------------------------------------------------------------------
    def plan(self, grid: Grid) -> PreprocessContext:
        """The context for an image with this grid (no pixel data touched)."""
        cfg = self.config
        reo = reorientation_for(grid, cfg.orientation)
        oriented = reorient_grid(grid, reo)
        if cfg.mode == "spacing":
            model = grid_for_spacing(oriented, cfg.spacing_mm)
        else:
            model = grid_for_size(oriented, cfg.size)
        resampled = not model.close_to(oriented, tol=1e-6)
        if not resampled:
            model = oriented
        pads = padding_for(model.shape, cfg.patch_size_dhw, cfg.padding_position)
        return PreprocessContext(grid, reo, oriented, model, resampled, pads)

    # -- forward --------------------------------------------------------------------------------
    def forward(self, image) -> tuple[np.ndarray, PreprocessContext]:
        """CT (``SimpleITK.Image``, HU) -> network input.

        Returns:
            ``arr``: float32 (D, H, W), windowed, scaled and padded; ``ctx`` for the inverse.
        """
        import SimpleITK as sitk

        _check_scalar_3d(image)
        ctx = self.plan(Grid.from_image(image))
        if ctx.resampled:
            interp = self.config.interpolation
            resampled = resample_to_grid(image, ctx.model_grid, interp, sitk.sitkFloat32, extrapolate_nearest=True)
            arr = sitk.GetArrayFromImage(resampled)
            del resampled
        else:
            view = ctx.reorientation.apply_array(sitk.GetArrayViewFromImage(image))
            arr = np.array(view, dtype=np.float32, order="C", copy=True)   # writable: a float32 view is read-only
            del view
        arr = window_and_scale(arr, self.config.window, self.config.scale)
        return pad(arr, ctx.padding, self.config.padding_value), ctx

    def forward_labels(self, label_image, ctx: PreprocessContext) -> np.ndarray:
        """Label map on the CT's grid -> integer (D, H, W) on the network grid (nearest neighbour, padded with 0).

        The label map must be on the same grid as the image ``ctx`` was made from (resample it first with
        ``scdl.io.image.read_label_map(path, reference=ct, resample=True)``). The dtype is the label image's
        integer type (float label images are rounded to int32).
        """
        import SimpleITK as sitk

        _check_scalar_3d(label_image)
        grid = Grid.from_image(label_image)
        if not grid.close_to(ctx.input_grid):
            raise ScdlError(
                f"the label map is not on the grid of its CT (label map: {grid.describe()}; "
                f"CT: {ctx.input_grid.describe()}).",
                fix="resample the label map onto the CT first (nearest neighbour).",
            )
        if ctx.resampled:
            out = resample_to_grid(label_image, ctx.model_grid, "nearest", extrapolate_nearest=True)
            arr = sitk.GetArrayFromImage(out)
        else:
            arr = np.ascontiguousarray(ctx.reorientation.apply_array(sitk.GetArrayViewFromImage(label_image)))
        if not np.issubdtype(arr.dtype, np.integer):
            arr = np.rint(arr).astype(np.int32)
        return pad(arr, ctx.padding, 0)

    # -- inverse --------------------------------------------------------------------------------
    def inverse_labels(self, labels: np.ndarray, ctx: PreprocessContext):
        """Integer (D, H, W) on the network grid (padding included) -> ``SimpleITK.Image`` on the input grid.

        Nearest neighbour; exact when the model grid is a permutation/flip of the input grid, and for label
        blocks aligned to the model grid. The output type is the smallest of uint8 / uint16 / int32 that holds
        the values.
        """

        arr = self._unpad(labels, ctx)
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        dtype, pixel = _label_pixel_type(hi, lo)
        return self._to_input_grid(arr.astype(dtype, copy=False), ctx, "nearest", pixel)

    def inverse_argmax(self, logits: np.ndarray, ctx: PreprocessContext):
        """Logits (C, D, H, W) on the network grid (padding included) -> argmax ``SimpleITK.Image`` on the input grid.

        Each class's logits are resampled linearly onto the input grid, one class at a time, and the running
        maximum decides the label: the memory is about 9 bytes per input voxel (a float32 maximum, a float32
        class being compared, the labels), not C x 4. Where the model grid is a permutation/flip of the input
        grid this equals :meth:`inverse_labels` of the argmax.
        """
        import SimpleITK as sitk

        logits = np.asarray(logits)
        if logits.ndim != 4:
            raise ValueError(f"expected logits of shape (C, D, H, W), got {logits.shape}")
        if not ctx.resampled:
            return self.inverse_labels(np.argmax(logits, axis=0), ctx)
        best: Optional[np.ndarray] = None
        labels: Optional[np.ndarray] = None
        dtype = np.uint8 if logits.shape[0] <= 256 else np.int32
        for c in range(int(logits.shape[0])):
            arr = self._unpad(logits[c], ctx).astype(np.float32, copy=False)
            resampled = self._to_input_grid(arr, ctx, "linear", sitk.sitkFloat32)
            channel = sitk.GetArrayViewFromImage(resampled)     # a view: ``resampled`` must outlive it
            if best is None:
                best = np.array(channel, dtype=np.float32)
                labels = np.zeros(best.shape, dtype=dtype)
                continue
            higher = channel > best
            labels[higher] = c
            np.maximum(best, channel, out=best)
        hi = int(labels.max()) if labels.size else 0
        small, _ = _label_pixel_type(hi, 0)          # the same pixel type as inverse_labels would give
        out = sitk.GetImageFromArray(labels.astype(small, copy=False))
        ctx.input_grid.apply_to(out)
        return out

    def inverse_scalar(self, values: np.ndarray, ctx: PreprocessContext):
        """Float (D, H, W) on the network grid (e.g. uncertainty) -> float32 ``SimpleITK.Image`` on the input grid (linear)."""
        import SimpleITK as sitk

        arr = self._unpad(values, ctx).astype(np.float32, copy=False)
        return self._to_input_grid(arr, ctx, "linear", sitk.sitkFloat32)

    @staticmethod
    def _unpad(values: Any, ctx: PreprocessContext) -> np.ndarray:
        arr = np.asarray(values)
        if arr.shape != ctx.shape:
            raise ValueError(f"expected an array of shape {ctx.shape} (D, H, W), got {arr.shape}")
        return crop(arr, ctx.padding)

    @staticmethod
    def _to_input_grid(arr: np.ndarray, ctx: PreprocessContext, interpolator: str, pixel):
        import SimpleITK as sitk

        if not ctx.resampled:
            out = sitk.GetImageFromArray(np.ascontiguousarray(ctx.reorientation.invert_array(arr)))
            ctx.input_grid.apply_to(out)
            return out
        model_img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
        ctx.model_grid.apply_to(model_img)
        return resample_to_grid(model_img, ctx.input_grid, interpolator, pixel, extrapolate_nearest=True)


def _check_scalar_3d(image) -> None:
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ScdlError(
            f"expected a 3D single-channel image, got {image.GetDimension()}D with "
            f"{image.GetNumberOfComponentsPerPixel()} component(s).",
            fix="give a 3D CT volume.",
        )
