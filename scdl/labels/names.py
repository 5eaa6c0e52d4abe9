"""Normalisation of structure names so that label maps from other tools can be matched by name.

``normalize_name`` turns the many spellings of one structure into one key::

    "kidney_right", "Right Kidney", "right-kidney", "RKid", "Kidney (R)"  -> "right kidney"
    "oesophagus", "Esophagus", "eso"                                      -> "esophagus"
    "portal_vein_and_splenic_vein", "Portal & splenic veins"             -> "portal and splenic veins"
    "adrenal_gland_left", "left adrenal", "Left suprarenal gland"         -> "left adrenal gland"

Rules, in order: lower case; ``_ - , ( ) . &`` become spaces (``&`` -> "and"); British spellings become
American; the laterality words (left/right, also a lone "l"/"r") move to the front; then a table of
synonyms and dataset abbreviations (BTCV/Synapse, AMOS, TotalSegmentator) gives the canonical key.
A name with alternatives, such as AMOS's "prostate/uterus", matches each alternative
(:func:`name_alternatives`).
"""

from __future__ import annotations

import re

#: British -> American spellings (applied word by word).
_SPELLING = {
    "oesophagus": "esophagus",
    "oesophageal": "esophageal",
    "haemorrhage": "hemorrhage",
    "oedema": "edema",
    "foetal": "fetal",
}

#: Laterality words (and the one-letter forms used in "Kidney (R)").
_SIDES = {"left": "left", "right": "right", "l": "left", "r": "right", "lt": "left", "rt": "right"}

#: Synonyms and dataset abbreviations -> canonical key (keys are already normalised by the rules above).
SYNONYMS: dict[str, str] = {
    # kidneys (BTCV "rkid"/"lkid", AMOS "right kidney")
    "rkid": "right kidney",
    "lkid": "left kidney",
    # gallbladder
    "gall bladder": "gallbladder",
    "gall": "gallbladder",
    "gb": "gallbladder",
    # esophagus
    "eso": "esophagus",
    # stomach
    "sto": "stomach",
    # aorta (AMOS's class list spells it "arota")
    "arota": "aorta",
    # inferior vena cava
    "ivc": "inferior vena cava",
    "postcava": "inferior vena cava",
    "vena cava inferior": "inferior vena cava",
    # portal and splenic veins (TotalSegmentator "portal_vein_and_splenic_vein"; BTCV's bare "veins" is
    # left out on purpose: it is too generic outside that dataset)
    "portal vein and splenic vein": "portal and splenic veins",
    "portal vein and splenic veins": "portal and splenic veins",
    "portal and splenic vein": "portal and splenic veins",
    "portal splenic vein": "portal and splenic veins",
    "portal splenic veins": "portal and splenic veins",
    "portal veins and splenic veins": "portal and splenic veins",
    "splenic and portal veins": "portal and splenic veins",
    "pv sv": "portal and splenic veins",
    # adrenal glands (BTCV's "rad"/"lad" are left out on purpose: "LAD" is also a coronary artery)
    "right adrenal": "right adrenal gland",
    "left adrenal": "left adrenal gland",
    "right suprarenal gland": "right adrenal gland",
    "left suprarenal gland": "left adrenal gland",
    # bladder
    "urinary bladder": "bladder",
    # duodenum, pancreas, spleen, liver have no common variants beyond case/spelling
}


def _basic(name: str) -> list[str]:
    text = str(name).strip().lower()
    text = text.replace("&", " and ")
    text = re.sub(r"[_\-,().;:]+", " ", text)
    words = [_SPELLING.get(word, word) for word in text.split()]
    return words


def normalize_name(name: str) -> str:
    """Canonical key of a structure name (see the module docstring); ``""`` for an empty name."""
    words = _basic(name)
    if not words:
        return ""
    # keep one-letter side markers only when they are not the whole name ("l" alone stays "l")
    sides = [w for w in words if w in _SIDES and (len(w) > 2 or len(words) > 1)]
    if len(set(_SIDES[w] for w in sides)) == 1:
        side = _SIDES[sides[0]]
        rest = [w for w in words if w not in sides]
        candidate = " ".join(rest)
        candidate = SYNONYMS.get(candidate, candidate)
        key = f"{side} {candidate}" if candidate else side
    else:
        key = " ".join(words)
    return SYNONYMS.get(key, key)


def name_alternatives(name: str) -> list[str]:
    """Normalised keys a name stands for: one key, or one per alternative in "a/b" or "a or b" names."""
    text = str(name)
    parts = [p for p in re.split(r"/|\bor\b", text, flags=re.IGNORECASE) if p.strip()]
    keys = [normalize_name(text)]
    if len(parts) > 1:
        keys += [normalize_name(p) for p in parts]
    seen: list[str] = []
    for key in keys:
        if key and key not in seen:
            seen.append(key)
    return seen
