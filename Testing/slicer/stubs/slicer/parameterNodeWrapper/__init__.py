"""Test-only stand-in for ``slicer.parameterNodeWrapper`` (Slicer >= 5.4), enough for typed module state.

``@parameterNodeWrapper`` turns a class with annotated attributes into a wrapper around a real
``vtkMRMLScriptedModuleNode``: ``str``/``int``/``float``/``bool`` are stored as parameters (strings),
MRML node types as node references, defaults come from the class body. ``connectGui`` returns a tag and
binds nothing (there is no Qt here); tests drive the widgets' handlers directly.
Unsupported annotations raise ``TypeError`` at decoration time, as the real decorator does.
"""

import typing as _typing

import slicer as _slicer

__all__ = ["parameterNodeWrapper"]

_SCALARS = {
    str: (str, str),
    int: (str, int),
    float: (repr, float),
    bool: (lambda v: "true" if v else "false", lambda s: s == "true"),
}


def _is_node_type(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, _slicer.vtkMRMLNode)


def _make_property(name, tp, default):
    if tp in _SCALARS:
        to_str, from_str = _SCALARS[tp]

        def getter(self):
            node = self.parameterNode
            if not node.GetParameter(name):
                return default
            return from_str(node.GetParameter(name))

        def setter(self, value):
            if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
                if tp is float and isinstance(value, int) and not isinstance(value, bool):
                    value = float(value)
                else:
                    raise TypeError(f"parameter {name!r} expects {tp.__name__}, got {type(value).__name__}")
            self.parameterNode.SetParameter(name, to_str(value))

        return property(getter, setter)

    if _is_node_type(tp):

        def node_getter(self):
            return self.parameterNode.GetNodeReference(name)

        def node_setter(self, value):
            if value is not None and not value.IsA(tp.__name__):
                raise TypeError(f"parameter {name!r} expects {tp.__name__}, got {value.GetClassName()}")
            self.parameterNode.SetNodeReferenceID(name, value.GetID() if value is not None else None)

        return property(node_getter, node_setter)

    raise TypeError(f"parameterNodeWrapper stand-in: unsupported type {tp!r} for {name!r}")


def parameterNodeWrapper(cls):
    hints = _typing.get_type_hints(cls)
    defaults = {name: cls.__dict__.get(name) for name in hints}
    namespace = {"__doc__": cls.__doc__, "__module__": cls.__module__, "allParameters": dict(hints)}

    def __init__(self, parameterNode):
        if parameterNode is None or not parameterNode.IsA("vtkMRMLScriptedModuleNode"):
            raise TypeError("a parameter node wrapper needs a vtkMRMLScriptedModuleNode")
        self.parameterNode = parameterNode
        for pname, ptype in hints.items():
            if ptype in _SCALARS and not parameterNode.GetParameter(pname) and defaults[pname] is not None:
                getattr(type(self), pname).fset(self, defaults[pname])

    def connectGui(self, gui):
        return object()

    def disconnectGui(self, tag):
        return None

    def isCached(self, name):
        return False

    namespace.update(__init__=__init__, connectGui=connectGui, disconnectGui=disconnectGui, isCached=isCached)
    for pname, ptype in hints.items():
        namespace[pname] = _make_property(pname, ptype, defaults[pname])
    return type(cls.__name__, (), namespace)
