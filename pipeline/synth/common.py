"""Shared phantom types: a synthetic series (image + ground-truth labels on its grid) and grid helpers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.core.volume import Volume

#: recorded in every ground_truth.json; 1.1: the lumbar epidural space fills the canal up to the curved posterior disc
#: margin (1.0 left a band of soft tissue there with the signal of the annulus, hiding the disc margin on T2)
GENERATOR_VERSION = "1.1"


@dataclass
class SynthSeries:
    """One synthetic series: the image volume, its ground-truth label map on the same grid and naming facts."""

    role: str
    volume: Volume
    labels: Volume | None
    description: str
    plane: str
    contrast: str


def axial_grid_affine(x0: float, y0: float, z0: float, dx: float, dy: float, dz: float) -> np.ndarray:
    """RAS affine of an axis-aligned grid whose voxel (0, 0, 0) centre lies at (x0, y0, z0) mm."""
    aff = np.diag([dx, dy, dz, 1.0])
    aff[:3, 3] = [x0, y0, z0]
    return aff


def smooth_noise_2d(rng: np.random.Generator, n_terms: int = 6, max_freq: float = 0.06):
    """A random smooth 2-D field f(u, v) in [-1, 1]: a sum of ``n_terms`` plane waves with wavelengths of at least
    ``1 / max_freq`` mm. Returns a vectorised function."""
    k = rng.uniform(-max_freq, max_freq, size=(n_terms, 2)) * 2 * np.pi
    ph = rng.uniform(0, 2 * np.pi, n_terms)
    amp = rng.uniform(0.5, 1.0, n_terms)
    amp /= amp.sum()

    def field(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        out = np.zeros(np.broadcast(u, v).shape)
        for (ku, kv), p, a in zip(k, ph, amp):
            out += a * np.cos(ku * u + kv * v + p)
        return out

    return field
