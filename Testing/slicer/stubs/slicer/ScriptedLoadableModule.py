"""Test-only stand-in for Slicer's ``slicer.ScriptedLoadableModule`` (not in the slicer-core wheel).

It keeps the parts of the real base classes that a module's Logic and tests rely on: module names derived
from the class names, the singleton parameter node in ``slicer.mrmlScene`` (real MRML), ``resourcePath``
and ``ScriptedLoadableModuleTest`` as a ``unittest.TestCase`` with ``delayDisplay``. Everything that needs
the Slicer application (module manager, developer section, screenshots) is left out on purpose: a call to
it fails loudly instead of pretending to work.

This folder has no ``__init__.py``: it is merged into the real ``slicer`` package (a namespace extension,
see ``slicer/__init__.py`` of slicer-core), so ``from slicer.ScriptedLoadableModule import *`` works.
"""

import logging as _logging
import os as _os
import unittest as _unittest

import slicer as _slicer

__all__ = ["ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic", "ScriptedLoadableModuleTest"]


class ScriptedLoadableModule:
    """Module descriptor: ``parent`` is any object that accepts the title, categories, help ... attributes."""

    def __init__(self, parent):
        self.parent = parent
        self.moduleName = self.__class__.__name__
        parent.title = ""
        parent.categories = []
        parent.dependencies = []
        parent.contributors = []
        parent.helpText = ""
        parent.acknowledgementText = ""

    def resourcePath(self, filename):
        return _os.path.join(_os.path.dirname(self.parent.path), "Resources", filename)


class ScriptedLoadableModuleWidget:
    """Widget base: only the pieces that do not need a running application."""

    def __init__(self, parent=None):
        super().__init__()
        self.moduleName = self.__class__.__name__
        if self.moduleName.endswith("Widget"):
            self.moduleName = self.moduleName[:-6]
        self.developerMode = False
        self.parent = parent
        self.layout = parent.layout() if parent is not None and hasattr(parent, "layout") else None

    def resourcePath(self, filename):
        # The real one asks the module manager (slicer.util.modulePath); here the class's own file is the module.
        return _os.path.join(_os.path.dirname(_module_file(self)), "Resources", filename)

    def setup(self):
        pass

    def cleanup(self):
        pass

    def onReload(self):
        raise RuntimeError("Reload needs the Slicer application (slicer.util.reloadScriptedModule).")


def _module_file(obj) -> str:
    import sys as _sys

    return _sys.modules[obj.__class__.__module__].__file__


class ScriptedLoadableModuleLogic:
    """Logic base with Slicer's singleton parameter node behaviour (real vtkMRMLScriptedModuleNode)."""

    def __init__(self, parent=None):
        super().__init__()
        self.moduleName = self.__class__.__name__
        if self.moduleName.endswith("Logic"):
            self.moduleName = self.moduleName[:-5]
        self.isSingletonParameterNode = True

    def getParameterNode(self):
        scene = _slicer.mrmlScene
        if self.isSingletonParameterNode:
            node = scene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node:
                if node.GetAttribute("ModuleName") != self.moduleName:
                    node.SetAttribute("ModuleName", self.moduleName)
                return node
        return scene.AddNode(self.createParameterNode())

    def createParameterNode(self):
        scene = _slicer.mrmlScene
        node = scene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
        node.UnRegister(None)
        if self.isSingletonParameterNode:
            node.SetSingletonTag(self.moduleName)
        node.SetAttribute("ModuleName", self.moduleName)
        node.SetName(scene.GenerateUniqueName(self.moduleName))
        return node


class ScriptedLoadableModuleTest(_unittest.TestCase):
    """``unittest.TestCase`` with Slicer's ``delayDisplay`` (logged here: there is no window to show it in)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.enableScreenshots = False
        self.screenshotScaleFactor = 1.0

    def delayDisplay(self, message, requestedDelay=None, msec=None):
        _logging.info(message)

    def takeScreenshot(self, name, description, type=-1):
        self.delayDisplay(description)

    def runTest(self):
        _logging.warning("No test is defined in " + self.__class__.__name__)
