"""The output folder of one study and of a batch (DESIGN.md "Output contract"): every path, and the series index.

:class:`StudyDir` is the one place that spells an output file name; the stage drivers read and write through it.
:class:`SeriesIndex` is the typed view of ``series.json``: role -> volume path, the axial lumbar stacks in order,
the DICOM source files of a role. :class:`BatchDir` names what a batch writes at its root.

>>> d = StudyDir("/tmp/out/nmh_case")
>>> d.calf_labels.relative_to(d.root).as_posix(), d.spine_labels_ax(2).name
('calf/labels.nii.gz', 'labels_ax_2.nii.gz')
>>> d.spine_probability(d.spine_labels_ax(1), "disc").name
'disc_probability_ax.nii.gz'
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.errors import BadInputError

#: role of an axial lumbar T2 stack: ``lumbar_ax_t2`` (the first), ``lumbar_ax_t2_2``, ``lumbar_ax_t2_3`` ...
AX_ROLE = re.compile(r"^lumbar_ax_t2(_(\d+))?$")


def axial_stack_number(role: str) -> int | None:
    """The 1-based number of an axial lumbar stack from its role, None for other roles.

    >>> axial_stack_number("lumbar_ax_t2"), axial_stack_number("lumbar_ax_t2_3"), axial_stack_number("calf_fat")
    (1, 3, None)
    """
    m = AX_ROLE.match(role)
    return None if m is None else int(m.group(2) or 1)


def is_dicom_files(files: list[str]) -> bool:
    """True when a series' source files are DICOM (not NIfTI).

    >>> is_dicom_files(["a/1.dcm"]), is_dicom_files(["water.nii.gz"]), is_dicom_files([])
    (True, False, False)
    """
    return bool(files) and not any(str(f).endswith((".nii", ".nii.gz")) for f in files)


@dataclass(frozen=True)
class SeriesEntry:
    """One series of ``series.json``: its role, its canonical volume's path (None when no volume was built, e.g. a
    localizer) and its source files."""

    role: str
    volume: Path | None
    files: tuple[str, ...] = ()

    @property
    def is_dicom(self) -> bool:
        return is_dicom_files(list(self.files))


@dataclass(frozen=True)
class SeriesIndex:
    """The typed view of ``series.json`` (written by ingest): every series found, in the order of the file."""

    study: Path | None
    entries: tuple[SeriesEntry, ...] = ()
    patient: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    def entry(self, role: str) -> SeriesEntry | None:
        """The first series of ``role`` (None when the study has none)."""
        return next((e for e in self.entries if e.role == role), None)

    def volume(self, role: str) -> Path | None:
        """Path of the canonical volume of ``role`` (None when absent)."""
        return self.volumes().get(role)

    def volumes(self) -> dict[str, Path]:
        """Role -> volume path of every series with a volume."""
        return {e.role: e.volume for e in self.entries if e.volume is not None}

    def axial_stacks(self) -> list[SeriesEntry]:
        """The axial lumbar T2 stacks with a volume, in their order (``lumbar_ax_t2``, ``lumbar_ax_t2_2``, ...)."""
        stacks = [e for e in self.entries if e.volume is not None and axial_stack_number(e.role) is not None]
        return sorted(stacks, key=lambda e: axial_stack_number(e.role) or 0)

    def patient_label(self) -> str:
        """Patient name and ID as burnt into pictures with ``--show-phi`` ("patient" when unknown)."""
        name = self.patient.get("name") or self.patient.get("PatientName") or ""
        pid = self.patient.get("id") or self.patient.get("PatientID") or ""
        return f"{name} {pid}".strip() or "patient"


@dataclass(frozen=True)
class StudyDir:
    """The output folder ``OUT`` of one study and every path of its output contract."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    # -- ingest ------------------------------------------------------------------------------------------------
    @property
    def series_json(self) -> Path:
        return self.root / "series.json"

    @property
    def volumes_dir(self) -> Path:
        return self.root / "volumes"

    def volume(self, role: str) -> Path:
        """Where ingest writes the canonical volume of ``role``."""
        return self.volumes_dir / f"{role}.nii.gz"

    # -- calf --------------------------------------------------------------------------------------------------
    @property
    def calf_dir(self) -> Path:
        return self.root / "calf"

    @property
    def calf_labels(self) -> Path:
        return self.calf_dir / "labels.nii.gz"

    @property
    def calf_ff_map(self) -> Path:
        return self.calf_dir / "ff_map.nii.gz"

    @property
    def calf_r2star_map(self) -> Path:
        return self.calf_dir / "r2star_map.nii.gz"

    @property
    def calf_water_fit(self) -> Path:
        """Water of the multi-echo fit: with calf_fat_fit the segmentation and measurement input of echo-only
        studies."""
        return self.calf_dir / "water_fit.nii.gz"

    @property
    def calf_fat_fit(self) -> Path:
        return self.calf_dir / "fat_fit.nii.gz"

    @property
    def calf_measurements(self) -> Path:
        return self.calf_dir / "measurements.csv"

    @property
    def calf_slices(self) -> Path:
        return self.calf_dir / "slices.csv"

    @property
    def calf_seg(self) -> Path:
        return self.calf_dir / "seg.dcm"

    # -- spine -------------------------------------------------------------------------------------------------
    @property
    def spine_dir(self) -> Path:
        return self.root / "spine"

    @property
    def spine_labels_sag(self) -> Path:
        return self.spine_dir / "labels_sag.nii.gz"

    def spine_labels_ax(self, number: int) -> Path:
        """Label map of the ``number``-th axial stack (1: ``labels_ax.nii.gz``, 2: ``labels_ax_2.nii.gz`` ...)."""
        return self.spine_dir / ("labels_ax.nii.gz" if number == 1 else f"labels_ax_{number}.nii.gz")

    def spine_labels_for(self, role: str) -> Path:
        """Label map of the axial stack of ``role``."""
        number = axial_stack_number(role)
        if number is None:
            raise ValueError(f"'{role}' is not an axial lumbar T2 role")
        return self.spine_labels_ax(number)

    @staticmethod
    def spine_probability(labels: Path, structure: str = "sac") -> Path:
        """Probability map of ``structure`` beside a spine label map: ``labels_sag.nii.gz`` ->
        ``sac_probability_sag.nii.gz`` (likewise ``disc``, ``posterior_elements`` of the axial stacks)."""
        return labels.with_name(labels.name.replace("labels_", f"{structure}_probability_", 1))

    @property
    def spine_levels(self) -> Path:
        return self.spine_dir / "levels.json"

    @property
    def spine_marks(self) -> Path:
        return self.spine_dir / "marks.json"

    @property
    def spine_measurements(self) -> Path:
        return self.spine_dir / "measurements.csv"

    # -- summary, rules, report, records -----------------------------------------------------------------------
    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def findings(self) -> Path:
        return self.root / "findings.json"

    @property
    def provenance(self) -> Path:
        return self.root / "provenance.json"

    @property
    def sr(self) -> Path:
        return self.root / "measurements_sr.dcm"

    @property
    def qa_dir(self) -> Path:
        return self.root / "qa"

    def qa(self, name: str) -> Path:
        """A QA picture ``qa/<name>.png``."""
        return self.qa_dir / f"{name}.png"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def error_log(self) -> Path:
        return self.root / "error.log"

    def stage_marker(self, stage: str) -> Path:
        """The empty file the Snakemake workflow touches when ``stage`` (one without a single output) is done."""
        return self.root / f".stage_{stage}.done"

    def relative(self, path: Path) -> str:
        """``path`` relative to the study folder, as recorded in provenance and reports."""
        return Path(path).relative_to(self.root).as_posix()

    # -- reading -----------------------------------------------------------------------------------------------
    def require(self, path: Path, stage: str) -> None:
        """Raise :class:`BadInputError` naming ``stage`` when ``path`` (written by that stage) is missing."""
        if not path.exists():
            raise BadInputError(f"{path.name} not found; this folder has not been through '{stage}' yet.",
                                path=self.root, fix=f"run 'legmri {stage}' (or 'legmri run') for this study first.")

    def read_json(self, path: Path, default: Any = None) -> Any:
        """The JSON content of ``path`` (one of this folder's files), ``default`` when it does not exist."""
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else default

    def series(self) -> SeriesIndex:
        """The series index of ``series.json`` (empty when ingest has not run)."""
        raw = self.read_json(self.series_json, {"series": []})
        entries = tuple(SeriesEntry(s.get("role", ""), self.root / s["volume"] if s.get("volume") else None,
                                    tuple(s.get("files") or ())) for s in raw.get("series", []))
        study = raw.get("study")
        patient = raw.get("patient") if isinstance(raw.get("patient"), dict) else {}
        return SeriesIndex(Path(study) if study else None, entries, patient, raw)

    def summary_values(self) -> dict[str, Any]:
        """The ``values`` of ``summary.json`` ({} before the measure stage)."""
        return (self.read_json(self.summary, {}) or {}).get("values", {})


@dataclass(frozen=True)
class BatchDir:
    """The output root of a batch or workflow: one :class:`StudyDir` per study, the cohort index and the logs."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    def study(self, name: str) -> StudyDir:
        return StudyDir(self.root / name)

    @property
    def index_html(self) -> Path:
        return self.root / "index.html"

    @property
    def cohort_csv(self) -> Path:
        return self.root / "cohort.csv"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def studies(self) -> list[StudyDir]:
        """Study folders under the root that have been through ingest, by name."""
        return [StudyDir(d) for d in sorted(self.root.iterdir()) if d.is_dir() and StudyDir(d).series_json.exists()]
