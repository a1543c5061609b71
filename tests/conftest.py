"""Shared test fixtures."""

from __future__ import annotations

import os

# Keep BLAS and torch from oversubscribing the two cores shared by pytest-xdist workers.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
