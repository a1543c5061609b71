"""``legmri workflow``: the Snakemake workflow packaged with legmri (``Snakefile``, ``rules/*.smk``, ``profiles/``).

``run_workflow(root, out, extra_args)`` runs ``python -m snakemake`` with the packaged Snakefile in a subprocess
(Snakemake's supported command-line interface), the working directory ``out`` and ``--config root=... out=...``;
``extra_args`` go to Snakemake unchanged (e.g. ``--cores 4``,
``--profile pipeline/workflow/snakemake/profiles/slurm``, ``-n``). ``python -m pipeline.workflow.snakemake cohort
OUT`` writes the cohort index (the workflow's last rule).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.core.config import load_config
from pipeline.core.errors import EXIT_OK
from pipeline.core.layout import BatchDir

SNAKEFILE = Path(__file__).with_name("Snakefile")


def snakemake_command(root: Path, out: Path, extra_args: Sequence[str] = ()) -> list[str]:
    """The snakemake command line for ``root`` -> ``out`` (``--cores 1`` unless cores or a profile are given)."""
    extra = list(extra_args)
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--directory", str(out),
           "--config", f"root={Path(root).resolve()}", f"out={Path(out).resolve()}"]
    if not any(a in ("--cores", "-c", "-j", "--jobs", "--profile", "--workflow-profile") or a.startswith(("-c", "-j"))
               for a in extra):
        cmd += ["--cores", "1"]
    return cmd + extra


def run_workflow(root: Path, out: Path, extra_args: Sequence[str] = ()) -> int:
    """Run the workflow over every study under ``root``; returns Snakemake's exit code."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.call(snakemake_command(Path(root), out, extra_args))


def cohort(out: Path) -> int:
    """Write index.html and cohort.csv over every study folder of ``out`` that has been through the workflow."""
    from pipeline.report.html import write_cohort

    studies = []
    for d in BatchDir(out).studies():
        if d.report_html.exists():
            studies.append({"name": d.root.name, "status": "ok"})
        else:
            err = d.error_log.read_text().splitlines()[0] if d.error_log.exists() else "incomplete"
            studies.append({"name": d.root.name, "status": "failed", "error": err})
    print(json.dumps({"studies": len(studies), "index": str(write_cohort(Path(out), studies, load_config("report")))}))
    return EXIT_OK
