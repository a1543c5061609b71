"""Store the reference outputs of the three sample studies that ``tests/workflow/test_reference_outputs.py``
compares every run with (tests/data/reference_outputs/<study>/).

Kept per study: the tidy measurement tables (``calf/measurements.csv``, ``legs.csv``, ``asymmetry.csv``, ``slices.csv``,
``spine/measurements.csv``), ``spine/levels.json``, ``spine/marks.json``, ``summary.json`` and ``findings.json``
(without its ``inputs``: file paths of this machine and the rules file's hash, which are not results). Run it after a change that is meant to change
the numbers, and say in the commit why they changed:

    .venv/bin/python scripts/make_reference_outputs.py                 # runs `legmri batch sample_data` first
    .venv/bin/python scripts/make_reference_outputs.py --from OUT      # from an existing batch output folder
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.core.layout import BatchDir, StudyDir  # noqa: E402

DEST = ROOT / "tests" / "data" / "reference_outputs"
STUDIES = ("control", "myopathic", "nmh_case")


def kept_files(study: StudyDir) -> list[Path]:
    """The outputs of a study that the reference holds."""
    return [study.calf_measurements, study.calf_legs, study.calf_asymmetry, study.calf_slices,
            study.spine_measurements, study.spine_levels, study.spine_marks, study.summary, study.findings]


def store(batch_out: Path, dest: Path = DEST) -> None:
    """Copy the kept outputs of every sample study from ``batch_out`` into ``dest``."""
    for name in STUDIES:
        src, ref = BatchDir(batch_out).study(name), BatchDir(dest).study(name)
        for path in kept_files(src):
            target = ref.root / src.relative(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            if path == src.findings:
                record = json.loads(path.read_text(encoding="utf-8"))
                record.pop("inputs", None)  # file paths and the rules file's hash, not results
                target.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
            else:
                shutil.copyfile(path, target)
    print(f"wrote {dest}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="source", type=Path, help="an existing `legmri batch sample_data` output folder")
    args = p.parse_args()
    if args.source is not None:
        store(args.source)
        return 0
    from pipeline.workflow.batch import run_batch

    with tempfile.TemporaryDirectory() as tmp:
        code = run_batch(ROOT / "sample_data", Path(tmp), jobs=1, force=True)
        if code == 0:
            store(Path(tmp))
        return code


if __name__ == "__main__":
    sys.exit(main())
