"""Reading CT images and writing label maps (NIfTI, NRRD, MHA, DICOM, .seg.nrrd)."""
