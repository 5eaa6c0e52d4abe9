"""Pictures: overlay previews of segmentations (overlay.py) and training curves."""
