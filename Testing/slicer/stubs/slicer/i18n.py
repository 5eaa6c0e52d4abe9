"""Test-only stand-in for ``slicer.i18n`` (the application's translator is absent: text is returned as is)."""


def translate(context, text):
    return text


def tr(text):
    return text
