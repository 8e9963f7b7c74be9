"""Imported by argv_probe.py from the script's own folder."""
VALUE = "sibling"
