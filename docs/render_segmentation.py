"""Render a segmentation written by `scdl segment` / `scdl demo` off screen (VTK, EGL): 3D organ surfaces in
their label-table colours over an axial CT slice. Used for the README's picture of a real result.

    python docs/render_segmentation.py CT SEGMENTATION.seg.nrrd OUT.png [--title TEXT]

Needs `vtk` (it comes with `slicer-core`, the test extra) and an EGL/OSMesa-capable machine for off-screen
rendering. Reads the segmentation with slicerio (names and colours from the file itself).
"""

from __future__ import annotations

import argparse

import numpy as np


def _vtk_image(array_kji: np.ndarray, ijk_to_lps: np.ndarray):
    """vtkImageData in LPS with the direction folded into the points' transform (returned separately)."""
    import vtk
    from vtk.util import numpy_support

    image = vtk.vtkImageData()
    image.SetDimensions(array_kji.shape[2], array_kji.shape[1], array_kji.shape[0])
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ascontiguousarray(array_kji).ravel(), deep=True))
    transform = vtk.vtkTransform()
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(ijk_to_lps[r, c]))
    transform.SetMatrix(matrix)
    return image, transform


def render(ct_path: str, seg_path: str, out_png: str, title: str = "", size: tuple[int, int] = (900, 700)) -> None:
    import SimpleITK as sitk
    import slicerio
    import vtk

    seg = slicerio.read_segmentation(seg_path)
    voxels = np.asarray(seg["voxels"])  # IJK order (slicerio)
    ijk_to_lps = np.asarray(seg["ijkToLPS"], dtype=float)
    labels_kji = np.transpose(voxels, (2, 1, 0)) if voxels.ndim == 3 else np.transpose(voxels[..., 0], (2, 1, 0))
    # one voxel of background around the volume closes the surfaces of organs that touch its border
    padded = np.pad(labels_kji.astype(np.int16), 1)
    shift = np.eye(4)
    shift[:3, 3] = -1.0
    label_image, transform = _vtk_image(padded, ijk_to_lps @ shift)

    renderer = vtk.vtkRenderer()
    renderer.SetBackground(0.08, 0.09, 0.12)
    for segment in seg["segments"]:
        value = int(segment["labelValue"])
        surface = vtk.vtkDiscreteFlyingEdges3D()
        surface.SetInputData(label_image)
        surface.SetValue(0, value)
        smooth = vtk.vtkWindowedSincPolyDataFilter()
        smooth.SetInputConnection(surface.GetOutputPort())
        smooth.SetNumberOfIterations(15)
        smooth.SetPassBand(0.05)
        smooth.NormalizeCoordinatesOn()
        place = vtk.vtkTransformPolyDataFilter()
        place.SetInputConnection(smooth.GetOutputPort())
        place.SetTransform(transform)
        normals = vtk.vtkPolyDataNormals()
        normals.SetInputConnection(place.GetOutputPort())
        mapper = vtk.vtkPolyDataMapper()
        mapper.SetInputConnection(normals.GetOutputPort())
        mapper.ScalarVisibilityOff()
        actor = vtk.vtkActor()
        actor.SetMapper(mapper)
        actor.GetProperty().SetColor(*[float(c) for c in segment["color"][:3]])
        actor.GetProperty().SetSpecular(0.3)
        renderer.AddActor(actor)

    # an axial CT slice below the organs, for context (grey window -160..240 HU)
    ct = sitk.ReadImage(ct_path)
    ct_kji = sitk.GetArrayFromImage(ct).astype(np.float32)
    k = 0  # the lowest slice: the organs stand on it
    slab = np.clip((ct_kji[k:k + 1] + 160.0) / 400.0, 0, 1) * 255
    direction = np.array(ct.GetDirection()).reshape(3, 3) * np.array(ct.GetSpacing())
    ct_ijk_to_lps = np.eye(4)
    ct_ijk_to_lps[:3, :3] = direction
    ct_ijk_to_lps[:3, 3] = np.array(ct.TransformIndexToPhysicalPoint((0, 0, k)))
    slice_image, slice_transform = _vtk_image(slab.astype(np.uint8), ct_ijk_to_lps)
    geometry = vtk.vtkImageDataGeometryFilter()
    geometry.SetInputData(slice_image)
    place = vtk.vtkTransformPolyDataFilter()
    place.SetInputConnection(geometry.GetOutputPort())
    place.SetTransform(slice_transform)
    lut = vtk.vtkLookupTable()
    lut.SetTableRange(0, 255)
    lut.SetSaturationRange(0, 0)
    lut.SetValueRange(0, 1)
    lut.Build()
    slice_mapper = vtk.vtkPolyDataMapper()
    slice_mapper.SetInputConnection(place.GetOutputPort())
    slice_mapper.SetLookupTable(lut)
    slice_mapper.SetScalarRange(0, 255)
    slice_actor = vtk.vtkActor()
    slice_actor.SetMapper(slice_mapper)
    slice_actor.GetProperty().SetOpacity(0.85)
    renderer.AddActor(slice_actor)

    if title:
        text = vtk.vtkTextActor()
        text.SetInput(title)
        text.GetTextProperty().SetFontSize(18)
        text.GetTextProperty().SetColor(1, 1, 1)
        text.SetPosition(12, 12)
        renderer.AddViewProp(text)

    camera = renderer.GetActiveCamera()
    camera.SetViewUp(0, 0, 1)           # superior up
    camera.SetPosition(0, -1, 1.1)      # in LPS: -y = anterior: from the front and above
    camera.SetFocalPoint(0, 0, 0)
    renderer.ResetCamera()
    camera.Zoom(1.5)

    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.AddRenderer(renderer)
    window.SetSize(*size)
    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(out_png)
    writer.SetInputConnection(grab.GetOutputPort())
    writer.Write()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ct")
    parser.add_argument("segmentation")
    parser.add_argument("out")
    parser.add_argument("--title", default="")
    args = parser.parse_args()
    render(args.ct, args.segmentation, args.out, args.title)


if __name__ == "__main__":
    main()
