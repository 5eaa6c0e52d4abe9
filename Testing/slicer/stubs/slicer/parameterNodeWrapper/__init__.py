"""Test-only stand-in for ``slicer.parameterNodeWrapper`` (Slicer >= 5.4), enough for typed module state.

``@parameterNodeWrapper`` turns a class with annotated attributes into a wrapper around a real
``vtkMRMLScriptedModuleNode`` as the real decorator does: ``str``/``int``/``float``/``bool`` are stored as
parameters (strings), MRML node types as node references, defaults come from the class body (else "", 0,
0.0, False, None) and are written into the node on construction; ``AddObserver``/``RemoveObserver``/
``Modified``/``StartModify``/``EndModify`` and ``getValue``/``setValue`` forward to the node.
``connectGui(gui)`` binds every widget of ``gui`` (the tests' stand-in ui) that carries a ``slicerParameterName``
(the .ui's ``SlicerParameterName``) as the real wrapper's GUI connectors do: the node's value is written into the
widget now and on every change of the node; the widget's change signal writes the widget's value into the node.
Widget classes without a connector in Slicer raise, as in Slicer.
Unsupported annotations raise ``TypeError`` at decoration time.
"""

import typing as _typing

import slicer as _slicer

__all__ = ["parameterNodeWrapper", "WithinRange", "Minimum", "Maximum", "Choice", "Decimals", "SingleStep"]


class _Annotation:
    """Stand-ins for the annotations of ``typing.Annotated`` parameters (validators and GUI hints): recorded
    only (``typing.get_type_hints`` drops them), as the real ones only constrain values and widget ranges."""

    def __init__(self, *args):
        self.args = args


class WithinRange(_Annotation):
    def __init__(self, minimum, maximum):
        super().__init__(minimum, maximum)
        self.minimum, self.maximum = minimum, maximum


class Minimum(_Annotation):
    pass


class Maximum(_Annotation):
    pass


class Choice(_Annotation):
    pass


class Decimals(_Annotation):
    pass


class SingleStep(_Annotation):
    pass

_SCALARS = {
    str: (str, str, ""),
    int: (str, int, 0),
    float: (repr, float, 0.0),
    bool: (lambda v: "true" if v else "false", lambda s: s == "true", False),
}


def _is_node_type(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, _slicer.vtkMRMLNode)


def _make_property(name, tp):
    if tp in _SCALARS:
        to_str, from_str, _default = _SCALARS[tp]

        def getter(self):
            return from_str(self.parameterNode.GetParameter(name))

        def setter(self, value):
            if tp is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
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


def parameterNodeWrapper(classtype=None):
    def wrap(cls):
        hints = _typing.get_type_hints(cls)
        defaults = {}
        for name, tp in hints.items():
            if name in cls.__dict__:
                defaults[name] = cls.__dict__[name]
            else:
                defaults[name] = _SCALARS[tp][2] if tp in _SCALARS else None

        def __init__(self, parameterNode):
            if parameterNode is None or not parameterNode.IsA("vtkMRMLScriptedModuleNode"):
                raise TypeError("a parameter node wrapper needs a vtkMRMLScriptedModuleNode")
            self.parameterNode = parameterNode
            for pname, ptype in hints.items():
                if ptype in _SCALARS and pname not in _parameter_names(parameterNode):
                    setattr(self, pname, defaults[pname])

        for pname, ptype in hints.items():
            setattr(cls, pname, _make_property(pname, ptype))
        cls.__init__ = __init__
        cls.allParameters = dict(hints)
        cls.connectGui = lambda self, gui: _connect_gui(self, gui, hints)
        cls.disconnectGui = lambda self, tag: _disconnect_gui(self, tag)
        cls.getValue = lambda self, name: getattr(self, name)
        cls.setValue = lambda self, name, value: setattr(self, name, value)
        cls.default = lambda self, name: defaults[name]
        cls.AddObserver = lambda self, event, callback, priority=0.0: self.parameterNode.AddObserver(event, callback, priority)
        cls.RemoveObserver = lambda self, tag: self.parameterNode.RemoveObserver(tag)
        cls.Modified = lambda self: self.parameterNode.Modified()
        cls.StartModify = lambda self: self.parameterNode.StartModify()
        cls.EndModify = lambda self, wasModified: self.parameterNode.EndModify(wasModified)
        return cls

    return wrap if classtype is None else wrap(classtype)


def _parameter_names(node) -> set:
    return set(node.GetParameterNames())


#: Slicer's GUI connectors (guiConnectors.py) for the widget classes the modules bind: class -> (read, write, signal).
_GUI_CONNECTORS = {
    "QCheckBox": (lambda w: bool(w.checked), lambda w, v: setattr(w, "checked", bool(v)), "toggled(bool)"),
    "QSpinBox": (lambda w: int(w.value), lambda w, v: setattr(w, "value", int(v)), "valueChanged(int)"),
    "QDoubleSpinBox": (lambda w: float(w.value), lambda w, v: setattr(w, "value", float(v)), "valueChanged(double)"),
    "QLineEdit": (lambda w: str(w.text), lambda w, v: setattr(w, "text", str(v)), "textChanged(QString)"),
    "qMRMLNodeComboBox": (lambda w: w.currentNode(), lambda w, v: w.setCurrentNode(v), "currentNodeChanged(vtkMRMLNode*)"),
}


def _connect_gui(wrapper, gui, hints):
    import vtk

    bound = []
    for widget in vars(gui).values():
        name = getattr(widget, "slicerParameterName", None)
        if not name:
            continue
        if name not in hints:
            raise ValueError(f"{widget.name}: SlicerParameterName {name!r} is not a parameter of {type(wrapper).__name__}")
        if widget.className not in _GUI_CONNECTORS:
            raise RuntimeError(f"Unable to create GUI connector from datatype {hints[name]} to widget type {widget.className}")
        read, write, signal = _GUI_CONNECTORS[widget.className]

        def slot(*_args, name=name, widget=widget, read=read):
            value = read(widget)
            if getattr(wrapper, name) != value:
                setattr(wrapper, name, value)

        widget.connect(signal, slot)
        bound.append((name, widget, write, signal, slot))

    def update_widgets(*_args):
        for name, widget, write, _signal, _slot in bound:
            was_blocked = widget.blockSignals(True)
            write(widget, getattr(wrapper, name))
            widget.blockSignals(was_blocked)

    update_widgets()
    return (wrapper.parameterNode.AddObserver(vtk.vtkCommand.ModifiedEvent, update_widgets), bound)


def _disconnect_gui(wrapper, tag):
    if not tag:
        return
    observer, bound = tag
    wrapper.parameterNode.RemoveObserver(observer)
    for _name, widget, _write, signal, slot in bound:
        widget.disconnect(signal, slot)
