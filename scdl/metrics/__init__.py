"""Segmentation metrics in millimetres on the native grid: per-class Dice, HD95 and ASD (MONAI's functions).

``dice.py`` is the one Dice (also validation's and the SSL benchmark's); ``scores.py`` scores two label arrays;
``evaluate.py`` reads files, matches labels by value or by name, checks grids and writes the report (table, CSV,
JSON).
"""
