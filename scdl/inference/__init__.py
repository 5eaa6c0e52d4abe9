"""Inference: Gaussian-blended sliding windows of an ensemble (sliding_window.py, ensemble.py), uncertainty
(uncertainty.py), device choice with CPU fallback (device.py), ``segment_image`` (predictor.py) and the whole
``scdl segment`` job from paths (runner.py, reused by ``scdl demo``).
"""
