"""Calf work of the segment and measure stages (segmentation in :mod:`calf_segment`, quantification in
:mod:`calf_measure`); imported lazily so that measuring never loads the network libraries."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def segment(out: Path, device: str = "cpu", models: Any = None) -> dict[str, Any]:
    """Segment the calf of study folder ``out``; returns facts for provenance."""
    from pipeline.workflow.calf_segment import segment_calf

    return segment_calf(Path(out), device=device, models=models)


def measure(out: Path) -> dict[str, Any]:
    """Measure the calf of study folder ``out`` (tables + the calf section of summary.json)."""
    from pipeline.workflow.calf_measure import measure_calf

    return measure_calf(Path(out))
