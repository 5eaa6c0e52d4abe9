"""Model catalog access for the Slicer modules: list, describe (card), cache folder, label tables.

Listing and reading cards runs in Slicer's process through ``scdl.models`` (JSON and CSV only: no torch,
no checksums); everything that verifies or downloads weights runs in a child (``scdl models import`` /
``download``, see ``jobs.ModelsJob``). No Qt here.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Optional

from SCDLSlicerLib.sceneio import LabelInfo, label_infos_from_table

try:
    from slicer.i18n import tr as _
except ImportError:  # pragma: no cover
    def _(text: str) -> str:
        return text


def list_models() -> list[dict[str, Any]]:
    """``scdl.models.listing.list_models()``: bundled, downloadable, trained and imported models."""
    from scdl.models.listing import list_models as core_list_models

    return core_list_models()


def default_model_id() -> str:
    from scdl.models.catalog import default_model_id as core_default

    return core_default()


def choose_initial_model(models: list[dict[str, Any]], preferred: Optional[str] = None) -> Optional[str]:
    """The model to preselect: ``preferred`` if listed, else the installed default, else the first installed."""
    ids = [m["id"] for m in models]
    if preferred and preferred in ids:
        return preferred
    for model in models:
        if model.get("default") and model.get("installed"):
            return model["id"]
    for model in models:
        if model.get("installed"):
            return model["id"]
    return ids[0] if ids else None


def model_label(model: dict[str, Any]) -> str:
    """Combo-box text: title, plus the state when it cannot be used right away."""
    text = str(model.get("title") or model["id"])
    status = str(model.get("status", ""))
    if not model.get("installed"):
        text += "  [" + (_("download needed") if status == "downloadable" else _("not installed")) + "]"
    elif status.startswith("invalid"):
        text += "  [" + _("invalid") + "]"
    return text


def load_card(model: dict[str, Any]) -> dict[str, Any]:
    """The full card of an installed model (read without checksums); for a catalog model that is not
    installed, the catalog entry's card template; else ``{}``."""
    if model.get("installed") and model.get("path"):
        from scdl.errors import ScdlError
        from scdl.models.package import ModelPackage

        try:
            return dict(ModelPackage.load(model["path"], verify=False).card)
        except ScdlError:
            return {}
    from scdl.models.catalog import catalog_entry

    entry = catalog_entry(model["id"]) or {}
    return dict(entry.get("card") or {})


def _facts(model: dict[str, Any]) -> dict[str, Any]:
    """What the catalog knows of a model that its card (or card template) may lack."""
    return {"title": model.get("title"), "model_id": model["id"], "label_names": model.get("label_names"),
            "status": model.get("status")}


def card_rows(model: dict[str, Any], card: Optional[dict[str, Any]] = None) -> list[tuple[str, str]]:
    """The model card as (heading, text) rows (the core's one renderer, ``scdl.models.cardtext``)."""
    from scdl.models import cardtext

    return cardtext.card_rows(load_card(model) if card is None else card, **_facts(model))


def card_tooltip(model: dict[str, Any], card: Optional[dict[str, Any]] = None) -> str:
    """The compact tooltip (title, id and version, classes, data, Dice, warnings; lines of <= 60 characters)."""
    from scdl.models import cardtext

    return cardtext.card_tooltip_html(load_card(model) if card is None else card, **_facts(model))


def card_html(model: dict[str, Any], card: Optional[dict[str, Any]] = None) -> str:
    """HTML card for the collapsible card view (the core's renderer, as ``scdl models info`` shows it)."""
    from scdl.models import cardtext

    return cardtext.card_html(load_card(model) if card is None else card, **_facts(model))


def label_infos(model_id_or_path: Optional[str]) -> Optional[list[LabelInfo]]:
    """The label table of a model (``--model`` value; None: the default) as ``LabelInfo``s, or None if the
    package cannot be read here (the child will then report the problem)."""
    from scdl.errors import ScdlError
    from scdl.models.catalog import resolve_model
    from scdl.models.package import ModelPackage

    try:
        path = resolve_model(model_id_or_path or default_model_id())
        return label_infos_from_table(ModelPackage.load(path, verify=False).labels)
    except ScdlError:
        return None


def cache_folder() -> Path:
    """The user's model cache folder (created if missing, so it can be opened)."""
    from scdl.resources import model_cache_dir

    folder = model_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def clear_cache(folder: Optional[Path] = None) -> tuple[list[str], list[str]]:
    """Delete the model packages in the cache: folders holding a ``manifest`` file, ``*.scdlmodel`` files and
    unfinished downloads (``.downloads``). Anything else is left alone. Returns (removed, kept) names."""
    from scdl.models.manifest import MANIFEST_FILE

    folder = cache_folder() if folder is None else Path(folder)
    removed, kept = [], []
    if not folder.is_dir():
        return removed, kept
    for entry in sorted(folder.iterdir()):
        is_package = entry.is_dir() and (entry / MANIFEST_FILE).is_file()
        is_archive = entry.is_file() and entry.name.endswith(".scdlmodel")
        is_partial = entry.name == ".downloads" or ".partial-" in entry.name
        if is_package or is_archive or is_partial:
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry.name)
        else:
            kept.append(entry.name)
    return removed, kept


#: Where SCDL Segment keeps its model choice: its parameter node is the scene's singleton
#: ``vtkMRMLScriptedModuleNode`` tagged with the module name (Slicer's ``ScriptedLoadableModuleLogic``), and
#: ``SCDLSegmentParameterNode.modelId`` is stored in it as the parameter of that name (a test keeps both in step).
SEGMENT_MODULE_NAME = "SCDLSegment"
SEGMENT_MODEL_PARAMETER = "modelId"


def select_for_segmentation(model_id: str, scene=None) -> None:
    """Make ``model_id`` SCDL Segment's model (SCDLTrain's hand-off), without importing that module: the value
    is written into SCDL Segment's parameter node, created as ``ScriptedLoadableModuleLogic`` would create it
    when the module was never opened."""
    import slicer

    scene = scene or slicer.mrmlScene
    node = scene.GetSingletonNode(SEGMENT_MODULE_NAME, "vtkMRMLScriptedModuleNode")
    if node is None:
        node = scene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
        node.UnRegister(None)
        node.SetSingletonTag(SEGMENT_MODULE_NAME)
        node.SetAttribute("ModuleName", SEGMENT_MODULE_NAME)
        node.SetName(scene.GenerateUniqueName(SEGMENT_MODULE_NAME))
        node = scene.AddNode(node)
    node.SetParameter(SEGMENT_MODEL_PARAMETER, str(model_id))
