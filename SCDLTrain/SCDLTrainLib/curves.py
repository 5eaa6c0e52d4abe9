"""Live training curves as Slicer plot nodes: table nodes, one plot series per column, two charts.

- ``<run> loss`` table: ``iteration`` + one column per loss term (``total``, ``sup``, ``cps``, ``scdl``, ...);
  the chart ``<run> loss`` draws the terms of :data:`SCDLTrainLib.monitor.CURVE_TERMS` (log-scaled y).
- ``<run> validation Dice`` table: ``iteration``, ``mean_dice`` and ``dice_<class>``; the chart draws the
  mean thick and black, each class thin in its label-table colour, y from 0 to 1.

The nodes are found again by the attribute :data:`RUN_ATTRIBUTE` (the run folder), so a resumed run keeps
its curves. Missing values (NaN) are written as NaN. MRML only: no Qt here.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import slicer

RUN_ATTRIBUTE = "SCDLTrain.Run"
KIND_ATTRIBUTE = "SCDLTrain.Curves"
#: Colours of the loss terms (r, g, b in 0..1); other terms get grey.
TERM_COLORS = {"total": (0.0, 0.0, 0.0), "sup": (0.12, 0.47, 0.71), "cps": (1.0, 0.5, 0.05),
               "consistency": (1.0, 0.5, 0.05), "scdl": (0.17, 0.63, 0.17), "proxy": (0.58, 0.4, 0.74),
               "sac": (0.55, 0.34, 0.29), "kl": (0.89, 0.47, 0.76)}


def _find(class_name: str, run: str, kind: str):
    scene = slicer.mrmlScene
    for index in range(scene.GetNumberOfNodesByClass(class_name)):
        node = scene.GetNthNodeByClass(index, class_name)
        if node.GetAttribute(RUN_ATTRIBUTE) == run and node.GetAttribute(KIND_ATTRIBUTE) == kind:
            return node
    return None


def _node(class_name: str, name: str, run: str, kind: str):
    node = _find(class_name, run, kind)
    if node is None:
        node = slicer.mrmlScene.AddNewNodeByClass(class_name, name)
        node.SetAttribute(RUN_ATTRIBUTE, run)
        node.SetAttribute(KIND_ATTRIBUTE, kind)
    return node


class TrainingCurves:
    """The plot nodes of one run (created on first use, found again later).

    Args:
        run: the run folder (identifies the nodes).
        title: prefix of the node names (the run folder's name).
        class_colors: ``{class name: (r, g, b) 0..1}`` for the Dice series.
    """

    def __init__(self, run: str, title: str, class_colors: Optional[dict[str, tuple]] = None):
        self.run = str(run)
        self.title = title
        self.class_colors = dict(class_colors or {})
        self.loss_table = _node("vtkMRMLTableNode", f"{title} loss", self.run, "loss-table")
        self.dice_table = _node("vtkMRMLTableNode", f"{title} validation Dice", self.run, "dice-table")
        self.loss_chart = _node("vtkMRMLPlotChartNode", f"{title} loss", self.run, "loss-chart")
        self.dice_chart = _node("vtkMRMLPlotChartNode", f"{title} validation Dice", self.run, "dice-chart")
        self.loss_chart.SetTitle(f"{title}: training loss")
        self.loss_chart.SetXAxisTitle("iteration")
        self.loss_chart.SetYAxisTitle("loss")
        self.dice_chart.SetTitle(f"{title}: validation Dice")
        self.dice_chart.SetXAxisTitle("iteration")
        self.dice_chart.SetYAxisTitle("Dice")
        self.dice_chart.SetYAxisRangeAuto(False)
        self.dice_chart.SetYAxisRange(0.0, 1.0)

    # -- tables -------------------------------------------------------------------------------------
    @staticmethod
    def _fill(table_node, rows: Sequence[dict], columns: Sequence[str]) -> None:
        arrays = [np.array([float(r.get(c, np.nan)) for r in rows], dtype=np.float64) for c in columns]
        slicer.util.updateTableFromArray(table_node, arrays, list(columns))

    def update(self, loss_rows: Sequence[dict], loss_columns: Sequence[str], val_rows: Sequence[dict],
               class_names: Sequence[str]) -> None:
        """Rewrite both tables from the rows and make sure every column has its series in the charts."""
        from SCDLTrainLib.monitor import CURVE_TERMS

        self._fill(self.loss_table, loss_rows, ["iteration", *loss_columns])
        dice_columns = ["iteration", "mean_dice", *[f"dice_{n}" for n in class_names]]
        self._fill(self.dice_table, val_rows, dice_columns)
        positive = all(r.get(c, 1.0) > 0 or np.isnan(r.get(c, 1.0)) for r in loss_rows for c in loss_columns
                       if c in CURVE_TERMS)
        self.loss_chart.SetYAxisLogScale(bool(loss_rows) and positive)
        for column in loss_columns:
            if column in CURVE_TERMS:
                self._series(self.loss_chart, self.loss_table, column, column,
                             TERM_COLORS.get(column, (0.5, 0.5, 0.5)), 3.0 if column == "total" else 1.5)
        self._series(self.dice_chart, self.dice_table, "mean_dice", "mean", (0.0, 0.0, 0.0), 3.0)
        for name in class_names:
            self._series(self.dice_chart, self.dice_table, f"dice_{name}", name,
                         self.class_colors.get(name, (0.5, 0.5, 0.5)), 1.5)

    def _series(self, chart, table, column: str, label: str, color: tuple, width: float):
        kind = f"series:{chart.GetAttribute(KIND_ATTRIBUTE)}:{column}"
        series = _find("vtkMRMLPlotSeriesNode", self.run, kind)
        if series is None:
            series = _node("vtkMRMLPlotSeriesNode", label, self.run, kind)
            series.SetAndObserveTableNodeID(table.GetID())
            series.SetXColumnName("iteration")
            series.SetYColumnName(column)
            series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
            series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
            series.SetLineWidth(width)
            series.SetColor(*color)
        if series.GetID() not in self.series_ids(chart):
            chart.AddAndObservePlotSeriesNodeID(series.GetID())
        return series

    @staticmethod
    def series_ids(chart) -> list[str]:
        return [chart.GetNthPlotSeriesNodeID(i) for i in range(chart.GetNumberOfPlotSeriesNodes())]

    def nodes(self) -> list:
        """Every node of these curves (tables, charts, series)."""
        out = [self.loss_table, self.dice_table, self.loss_chart, self.dice_chart]
        for chart in (self.loss_chart, self.dice_chart):
            out += [slicer.mrmlScene.GetNodeByID(i) for i in self.series_ids(chart)]
        return out


def class_colors_from_table(table) -> dict[str, tuple]:
    """``{class name: (r, g, b) 0..1}`` of a ``scdl.labels.table.LabelTable``."""
    return {entry.name: entry.color_float for entry in table.entries}
