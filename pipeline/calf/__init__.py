"""Calf: leg separation and sides, and per-muscle quantification (CSA, volume, fat fraction, girth, asymmetry)."""
