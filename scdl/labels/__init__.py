"""Label tables (value, name, colour, SNOMED CT codes) and mapping of foreign label maps by name."""
