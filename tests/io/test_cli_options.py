"""Command-line options every subcommand takes: -v / -q after the subcommand, and inspect --json for scripts."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pipeline.cli import main

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "control"


def test_inspect_json_lists_the_series(capsys):
    assert main(["inspect", str(SAMPLE), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["role"] for r in rows} >= {"calf_water", "calf_fat", "lumbar_sag_t2"}
    assert all(len(r["shape"]) == 3 for r in rows)


def test_verbosity_flags_after_the_subcommand(capsys):
    assert main(["inspect", str(SAMPLE), "-q"]) == 0
    assert logging.getLogger().level == logging.ERROR
    assert main(["inspect", str(SAMPLE), "-vv"]) == 0
    assert logging.getLogger().level == logging.DEBUG
    logging.getLogger().setLevel(logging.WARNING)
    capsys.readouterr()
