"""SCDL core package: CT I/O, the SCDL method, training, inference and the ``scdl`` command.

Runs without 3D Slicer; the SCDLSegment and SCDLTrain modules call it in a child process
(``PythonSlicer -m scdl ...``). Never imports slicer or qt.
"""

__version__ = "0.1.0"
