"""Intensity handling: window/level presets for display, normalisation for models (HU kept intact)."""
