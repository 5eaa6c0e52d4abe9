"""Pre- and post-processing between a CT on its own grid and a network's input grid.

``Preprocessor`` (pipeline.py) reorients, resamples (to a spacing or to a fixed size), windows and scales,
pads to the patch size, and maps label maps / scalar maps back onto the input grid exactly.
``keep_largest_component`` (postprocess.py) is the optional per-organ clean-up.
"""
