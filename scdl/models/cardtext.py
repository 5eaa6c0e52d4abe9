"""The one renderer of a model card for people: text (``scdl models info``), HTML (the Slicer card view),
a compact tooltip (the Slicer model selector) and Markdown (a package's README.md).

Everything works on the card dict (``card.json``, or a catalog entry's card template) and tolerates missing
sections: a catalog model that is not installed has only part of a card. Values are written for reading:
lists joined, numbers rounded, missing values left out; never a Python repr, ``None`` or ``{...}``.
"""

from __future__ import annotations

import html
import math
from typing import Any, Iterable, Mapping, Optional, Sequence

#: Longest line of the compact tooltip (characters).
TOOLTIP_WIDTH = 60


# -- values --------------------------------------------------------------------------------------------
def format_value(value: Any, digits: int = 4) -> str:
    """A card value as text: floats with ``digits`` significant digits, lists joined with ", ", mappings as
    ``key value`` pairs joined with "; " (missing values left out), None / NaN as "" (the caller skips it)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.{digits}g}"
    if isinstance(value, Mapping):
        parts = []
        for key, item in value.items():
            text = format_value(item, digits)
            if text:
                parts.append(f"{str(key).replace('_', ' ')} {text}")
        return "; ".join(parts)
    if isinstance(value, (list, tuple)):
        return ", ".join(t for t in (format_value(v, digits) for v in value) if t)
    return str(value)


def shorten(text: str, width: int) -> str:
    """``text`` cut at a word boundary to at most ``width`` characters, with "…" when cut."""
    text = " ".join(str(text).split())
    if len(text) <= width:
        return text
    cut = text[: width - 1]
    if " " in cut[width // 2:]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:(") + "…"


def _grid(pre: Mapping[str, Any]) -> str:
    if pre.get("mode") == "fixed_size" or (pre.get("size") and not pre.get("spacing_mm")):
        return "fixed size " + " x ".join(str(v) for v in pre.get("size") or []) + " voxels"
    if pre.get("spacing_mm"):
        return "spacing " + " x ".join(f"{float(v):g}" for v in pre["spacing_mm"]) + " mm"
    return ""


def _source_name(item: str) -> str:
    """A short name for one training-data entry: ``folder/name: ...`` -> ``name``; else the text."""
    head = item.split(":", 1)[0] if ":" in item else item
    if "/" in head and " " not in head:
        return head.rsplit("/", 1)[-1]
    return item


# -- summaries (one line each) ---------------------------------------------------------------------------
def class_count(card: Mapping[str, Any], label_names: Optional[Sequence[str]] = None) -> Optional[int]:
    """The number of classes other than background (from the label names, else the architecture)."""
    if label_names:
        return len([n for n in label_names if str(n).lower() != "background"])
    n = (card.get("architecture") or {}).get("n_classes")
    return int(n) - 1 if n else None


def data_summary(card: Mapping[str, Any], width: int = TOOLTIP_WIDTH) -> str:
    """The training data in one line: the names of the sources (``patient-A, s0001, 8 synthetic phantoms``)."""
    data = (card.get("provenance") or {}).get("data")
    if not data:
        return ""
    if isinstance(data, str):
        return shorten(data, width)
    names: list[str] = []
    for item in data:
        name = _source_name(str(item))
        if name == str(item):       # a sentence: its first clause
            name = str(item).split(";", 1)[0].split(" (", 1)[0]
        if name not in names:
            names.append(name)
    return shorten(", ".join(names), width)


def dice_summary(card: Mapping[str, Any]) -> str:
    """The card's accuracy figure in one line: held-out Dice (the default model), the validation Dice of
    ``scdl train``, or the Dice the authors' file name states; "" when the card has none."""
    metrics = (card.get("provenance") or {}).get("validation_metrics")
    if not isinstance(metrics, Mapping):
        return ""
    held = metrics.get("held_out")
    if isinstance(held, Mapping) and held:
        parts = []
        for patient, m in held.items():
            m = m if isinstance(m, Mapping) else {}
            value = m.get("mean_dice_labelled_organs", m.get("mean_dice"))
            if isinstance(value, (int, float)) and math.isfinite(float(value)):
                organs = f", {m['organs_labelled']} organs" if m.get("organs_labelled") else ""
                parts.append(f"{float(value):.2f} ({str(patient).rsplit('/', 1)[-1]}{organs})")
        validating = set((card.get("provenance") or {}).get("validation_patients") or [])
        label = "validation Dice " if validating and set(held) <= validating else "held-out Dice "
        return (label + "; ".join(parts)) if parts else ""
    value = metrics.get("mean_dice")
    if isinstance(value, (int, float)) and math.isfinite(float(value)):
        where = {"val": "validation cases", "train": "training cases"}.get(str(metrics.get("cases")),
                                                                          str(metrics.get("cases") or ""))
        at = f", iteration {metrics['iteration']}" if metrics.get("iteration") is not None else ""
        return f"validation Dice {float(value):.2f} ({where}{at})" if where else f"validation Dice {float(value):.2f}"
    value = metrics.get("dice_in_authors_file_name")
    if isinstance(value, (int, float)):
        return f"Dice {float(value):.2f} (stated in the authors' file name)"
    return shorten(format_value(metrics, 3), 200)


def validation_lines(card: Mapping[str, Any]) -> list[str]:
    """The validation metrics for the full card: the summary, then per held-out patient the organs' Dice."""
    metrics = (card.get("provenance") or {}).get("validation_metrics")
    if not isinstance(metrics, Mapping):
        return []
    lines = [dice_summary(card)] if dice_summary(card) else []
    held = metrics.get("held_out")
    if isinstance(held, Mapping):
        for patient, m in held.items():
            organs = (m or {}).get("organs") if isinstance(m, Mapping) else None
            if isinstance(organs, Mapping):
                cells = [f"{name} {format_value(s.get('dice'), 2) or '-'}" for name, s in organs.items()
                         if isinstance(s, Mapping)]
                lines.append(f"{str(patient).rsplit('/', 1)[-1]}: " + ", ".join(cells))
    elif isinstance(metrics.get("dice"), Mapping):
        lines.append("per class: " + ", ".join(f"{k} {format_value(v, 2) or '-'}" for k, v in metrics["dice"].items()))
    return lines


# -- the full card -------------------------------------------------------------------------------------

def _largest(inf: dict) -> str:
    """The card's largest-component post-processing in words."""
    if inf.get("keep_largest_component"):
        return "largest component of every organ"
    if inf.get("largest_component_organs"):
        return "largest component of " + ", ".join(inf["largest_component_organs"])
    return "largest component off" if inf.get("keep_largest_component") is not None else ""

def inference_summary(inf: Mapping[str, Any]) -> str:
    """One line of a card's ``inference`` section: window, overlap, blending, post-processing, resampling,
    test-time statistics (the model info table and the package's README)."""
    return ", ".join(x for x in (
        ("sliding window " + " x ".join(str(v) for v in inf["window_size"]) + " voxels") if inf.get("window_size") else "",
        f"overlap {inf['overlap']:g}" if inf.get("overlap") is not None else "",
        f"{inf['blending']} blending" if inf.get("blending") else "",
        _largest(inf),
        f"labels resampled {inf['label_resampling']}" if inf.get("label_resampling") else "",
        f"test-time batch-norm statistics {float(inf['bn_adapt']):g}" if inf.get("bn_adapt") else "") if x)


def card_rows(card: Mapping[str, Any], *, title: Optional[str] = None, model_id: Optional[str] = None,
              label_names: Optional[Sequence[str]] = None, path: Any = None, networks: Optional[int] = None,
              status: Optional[str] = None) -> list[tuple[str, str]]:
    """The card as (heading, text) rows, the empty ones left out. ``title``/``model_id``/``label_names``/
    ``status`` fill in what a catalog entry knows but a card template lacks."""
    arch = card.get("architecture") or {}
    pre = card.get("preprocessing") or {}
    inf = card.get("inference") or {}
    prov = card.get("provenance") or {}
    ident = model_id or card.get("id") or ""
    version = card.get("version")
    names = [n for n in (label_names or []) if str(n).lower() != "background"]
    count = class_count(card, label_names)
    classes = ""
    if names:
        classes = f"{len(names)} + background: " + ", ".join(names)
    elif count is not None:
        classes = f"{count} + background"
    network = ""
    if arch:
        network = " ".join(x for x in (str(arch.get("name") or ""),
                                       f"width {arch['n_filters']}" if arch.get("n_filters") else "",
                                       f"{arch['norm']} norm" if arch.get("norm") else "") if x)
        ensemble = networks or card.get("ensemble")
        if ensemble:
            network += f", ensemble of {ensemble}"
    preprocessing = ", ".join(x for x in (
        str(pre.get("orientation") or ""), _grid(pre),
        ("patch " + " x ".join(str(v) for v in pre["patch_size"])) if pre.get("patch_size") else "",
        (f"window {pre['window'][0]:g}..{pre['window'][1]:g} HU" + (
            f" -> {pre['scale'][0]:g}..{pre['scale'][1]:g}" if pre.get("scale") else "")) if pre.get("window") else "")
        if x)
    inference = inference_summary(inf)
    training = ", ".join(x for x in (
        str(prov.get("framework") or ""),
        f"{prov['iterations']} iterations" if prov.get("iterations") else "",
        f"{float(prov['training_time_s']) / 60:.0f} min" if prov.get("training_time_s") else "") if x)
    created = " with ".join(str(prov[k]) for k in ("created", "software_version") if prov.get(k))
    rows = [
        ("Model", str(title or card.get("title") or ident)),
        ("Id", str(ident) + (f" (version {version})" if version else "")),
        ("Status", str(status or "")),
        ("Path", str(path or "")),
        ("Description", str(card.get("description") or "")),
        ("Classes", classes),
        ("Network", network),
        ("Preprocessing", preprocessing),
        ("Inference", inference),
        ("Training data", "; ".join(format_value(d) for d in prov["data"]) if isinstance(prov.get("data"), list)
         else format_value(prov.get("data"))),
        ("Data licence", format_value(prov.get("data_licence"))),
        ("Training", training),
        ("Validation", " | ".join(validation_lines(card))),
        ("Created", created),
        ("Intended use", str(card.get("intended_use") or "")),
        ("Licence", str(card.get("licence") or "")),
    ]
    rows += [("Warning", str(w)) for w in card.get("warnings") or []]
    return [(h, t) for h, t in rows if t]


def card_text(card: Mapping[str, Any], **facts: Any) -> str:
    """The card as indented text (``scdl models info``): the title, then one ``heading: text`` line per row."""
    rows = card_rows(card, **facts)
    head = rows[0][1] if rows and rows[0][0] == "Model" else ""
    width = max((len(h) for h, _ in rows), default=0) + 2
    lines = [head] + [f"  {(h.upper() if h == 'Warning' else h.lower()) + ':':<{width}} {t}" for h, t in rows[1:]]
    return "\n".join(lines)


def card_html(card: Mapping[str, Any], **facts: Any) -> str:
    """The card as an HTML table (the Slicer card view)."""
    body = "".join(f"<tr><td valign='top'><b>{html.escape(h)}</b></td><td>{html.escape(t)}</td></tr>"
                   for h, t in card_rows(card, **facts))
    return f"<table cellspacing='2'>{body}</table>"


# -- the compact tooltip ---------------------------------------------------------------------------------
def tooltip_lines(card: Mapping[str, Any], *, title: Optional[str] = None, model_id: Optional[str] = None,
                  label_names: Optional[Sequence[str]] = None, status: Optional[str] = None,
                  width: int = TOOLTIP_WIDTH) -> list[str]:
    """A handful of lines of at most ``width`` characters: title, id and version, classes, training data,
    Dice, warnings count (and the status when the model is not installed)."""
    ident = model_id or card.get("id") or ""
    version = card.get("version")
    lines = [shorten(title or card.get("title") or ident, width)]
    if ident or version:
        lines.append(shorten(" · ".join(x for x in (str(ident), f"version {version}" if version else "") if x), width))
    if status and status != "installed":
        lines.append(shorten(f"status: {status}", width))
    count = class_count(card, label_names)
    if count is not None:
        lines.append(f"{count} classes + background")
    data = data_summary(card, width - len("data: "))
    if data:
        lines.append(f"data: {data}")
    dice = dice_summary(card)
    if dice:
        lines.append(shorten(dice, width))
    n = len(card.get("warnings") or [])
    if n:
        lines.append(f"{n} warning{'s' if n != 1 else ''}: see the model card")
    return lines


def card_tooltip(card: Mapping[str, Any], **facts: Any) -> str:
    """The compact tooltip as plain text (one line per :func:`tooltip_lines` entry)."""
    return "\n".join(tooltip_lines(card, **facts))


def card_tooltip_html(card: Mapping[str, Any], **facts: Any) -> str:
    """The compact tooltip as rich text (title in bold; Qt shows it without wrapping the short lines)."""
    lines = [html.escape(line) for line in tooltip_lines(card, **facts)]
    if lines:
        lines[0] = f"<b>{lines[0]}</b>"
    return "<p style='white-space:pre'>" + "<br>".join(lines) + "</p>"


# -- Markdown (README.md of a package) -------------------------------------------------------------------
def _md_list(items: Iterable[Any]) -> list[str]:
    return [f"- {format_value(i)}" for i in items if format_value(i)]


def card_markdown(card: Mapping[str, Any], *, training_notes: Sequence[str] = (),
                  held_out_heading: str = "Held-out metrics (native grid)") -> str:
    """A Markdown model card: title, description, intended use, warnings, training data and licences,
    training (plus ``training_notes``, one bullet each), held-out metrics per organ (when the card has them),
    licence of the weights."""
    prov = card.get("provenance") or {}
    metrics = prov.get("validation_metrics") if isinstance(prov.get("validation_metrics"), Mapping) else {}
    data = prov.get("data")
    lines = [f"# {card.get('title')} (`{card.get('id')}` {card.get('version')})", "", str(card.get("description") or ""),
             "", "## Intended use", str(card.get("intended_use") or ""), "", "## Warnings"]
    lines += _md_list(card.get("warnings") or [])
    lines += ["", "## Training data and licences"]
    lines += _md_list(data if isinstance(data, list) else [data])
    if prov.get("data_licence"):
        lines.append(f"- Licences: {prov['data_licence']}")
    if prov.get("held_out_patients"):
        lines.append(f"- Held out (never trained on): {', '.join(prov['held_out_patients'])}")
    if prov.get("validation_patients"):
        lines.append(f"- Validation (never trained on; chose the checkpoint and the ship decision): "
                     f"{', '.join(prov['validation_patients'])}")
    for stage in prov.get("lineage") or []:
        lines.append(f"- Stage {stage.get('version')}: from {stage.get('init') or 'a fresh start'}, "
                     f"{stage.get('iterations')} iterations, {stage.get('minutes')} min; "
                     + "; ".join(str(c) for c in stage.get("changes") or []))
    machine = prov.get("machine") or {}
    lines += ["", "## Training",
              f"- Framework: {prov.get('framework')} (scdl train), {prov.get('iterations')} iterations, "
              f"{(prov.get('training_time_s') or 0) / 60:.1f} min of training"
              + (f" on {machine.get('device')} ({machine.get('cpu_count')} CPU cores, torch {machine.get('torch')})"
                 if machine else "") + ".",
              f"- Architecture: {format_value(card.get('architecture'))}; ensemble of {card.get('ensemble')}.",
              f"- Preprocessing: {format_value(card.get('preprocessing'))}."]
    if inference_summary(card.get("inference") or {}):
        lines.append(f"- Inference (what `scdl segment` applies): {inference_summary(card.get('inference') or {})}.")
    lines += [f"- {note}" for note in training_notes]
    held = metrics.get("held_out") if isinstance(metrics, Mapping) else None
    if isinstance(held, Mapping) and held:
        lines += ["", f"## {held_out_heading}"]
        for patient, m in held.items():
            lines += [f"### {patient}", f"Mean Dice over the {m.get('organs_labelled')} labelled organs: "
                      f"**{m.get('mean_dice_labelled_organs')}** (over every organ in either map, false "
                      "positives counting 0: "
                      f"{m.get('mean_dice')}).", "", "| organ | Dice | HD95 mm | ASD mm | status |", "|---|---|---|---|---|"]
            for organ, s in (m.get("organs") or {}).items():
                cells = [format_value(s.get(k)) or "-" for k in ("dice", "hd95_mm", "asd_mm")]
                lines.append(f"| {organ} | {' | '.join(cells)} | {s.get('status', '')} |")
            lines.append("")
    elif dice_summary(card):
        lines += ["", "## Validation", f"- {dice_summary(card)}", ""]
    lines += ["Training-set numbers are never reported as accuracy. Licence of the weights: " + str(card.get("licence")), ""]
    return "\n".join(lines)
