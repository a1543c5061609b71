"""``python -m pipeline.workflow.snakemake cohort OUT``: the cohort index, the workflow's last rule."""

import sys
from pathlib import Path

from pipeline.workflow.snakemake import cohort

if __name__ == "__main__":  # pragma: no cover - called by the workflow's cohort rule
    if len(sys.argv) != 3 or sys.argv[1] != "cohort":
        sys.exit("usage: python -m pipeline.workflow.snakemake cohort OUT")
    sys.exit(cohort(Path(sys.argv[2])))
