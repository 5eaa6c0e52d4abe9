"""Test-only fake of PythonQt's ``ctk`` module. The SCDL modules use CTK widgets only through their .ui
files, which are not loaded in these tests; importing ``ctk`` must work, using it must not."""
