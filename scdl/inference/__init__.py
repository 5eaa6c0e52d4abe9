"""Inference: Gaussian-blended sliding windows of an ensemble (sliding_window.py, ensemble.py; the one path, also
validation during training), settings and their defaults (config.py), uncertainty (uncertainty.py), device choice
with CPU fallback (device.py), ``segment_image`` (predictor.py) and the whole ``scdl segment`` job from paths
(runner.py, reused by ``scdl demo``).
"""
