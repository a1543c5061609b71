"""The output folder of one study and of a batch (DESIGN.md "Output contract"): every path, and the series index.

:class:`StudyDir` is the one place that spells an output file name; the stage drivers read and write through it.
:class:`SeriesIndex` is the typed view of ``series.json``: role -> volume path, the axial lumbar stacks in order,
the DICOM source files of a role. :class:`BatchDir` names what a batch writes at its root.

>>> d = StudyDir("/tmp/out/nmh_case")
>>> d
StudyDir(root=PosixPath('/tmp/out/nmh_case'))
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

    def repeats(self, role: str) -> list[str]:
        """The further series ingestion classified as ``role`` (``role_2``, ``role_3``, ...: a repeated acquisition,
        or one role given twice), which a stage that reads ``role`` does not use."""
        return [e.role for e in self.entries if e.volume is not None and e.role.startswith(f"{role}_")
                and e.role.removeprefix(f"{role}_").isdigit()]

    def repeat_warnings(self, roles: tuple[str, ...] | list[str], anatomy: str) -> list[str]:
        """A warning for each of ``roles`` that the study holds more than once (:meth:`repeats`): the ``anatomy``
        stages use the first (the most superior) and a reader must know that they chose."""
        out = []
        for role in roles:
            extra = self.repeats(role)
            if extra:
                out.append(f"the study holds {1 + len(extra)} series classified {role} ({role}, {', '.join(extra)}); "
                           f"the {anatomy} was measured on {role} (the most superior) alone: if another is the one "
                           "to measure, name it in a study.yaml or remove the others")
        return out

    def axial_stacks(self) -> list[SeriesEntry]:
        """The axial lumbar T2 stacks with a volume, in their order (``lumbar_ax_t2``, ``lumbar_ax_t2_2``, ...)."""
        stacks = [e for e in self.entries if e.volume is not None and axial_stack_number(e.role) is not None]
        return sorted(stacks, key=lambda e: axial_stack_number(e.role) or 0)

    def patient_label(self) -> str:
        """Patient name and ID as burnt into pictures with ``--show-phi`` ("patient" when unknown)."""
        name = self.patient.get("name") or self.patient.get("PatientName") or ""
        pid = self.patient.get("id") or self.patient.get("PatientID") or ""
        return f"{name} {pid}".strip() or "patient"


class _File:
    """A path of the output contract, relative to the folder's ``root``: ``StudyDir(out).calf_labels`` is
    ``out/calf/labels.nii.gz``."""

    def __init__(self, relative: str) -> None:
        self.relative = relative

    def __get__(self, folder: Any, owner: type | None = None) -> Path:
        if folder is None:
            raise AttributeError(f"a path of a folder instance ({self.relative})")
        return Path(folder.root) / self.relative


@dataclass(frozen=True, init=False)
class _Folder:
    """An output folder: its ``root`` and the paths (:class:`_File`) its subclass declares."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))


class StudyDir(_Folder):
    """The output folder ``OUT`` of one study and every path of its output contract."""

    series_json = _File("series.json")
    volumes_dir = _File("volumes")
    calf_dir = _File("calf")
    calf_labels = _File("calf/labels.nii.gz")
    calf_ff_map = _File("calf/ff_map.nii.gz")
    calf_r2star_map = _File("calf/r2star_map.nii.gz")
    calf_water_fit = _File("calf/water_fit.nii.gz")  # the multi-echo fit's water and fat: the calf input of
    calf_fat_fit = _File("calf/fat_fit.nii.gz")  # echo-only studies
    calf_measurements = _File("calf/measurements.csv")  # per side, structure and metric
    calf_legs = _File("calf/legs.csv")  # per side: the leg outline's girth
    calf_asymmetry = _File("calf/asymmetry.csv")  # per structure and metric: right against left
    calf_slices = _File("calf/slices.csv")
    calf_qc = _File("calf/qc.json")  # segmentation quality control: verdicts, reasons and the evidence
    calf_certainty = _File("calf/certainty.json")  # the network's flip agreement per structure and leg
    calf_seg = _File("calf/seg.dcm")
    spine_dir = _File("spine")
    spine_labels_sag = _File("spine/labels_sag.nii.gz")
    spine_levels = _File("spine/levels.json")
    spine_marks = _File("spine/marks.json")
    spine_measurements = _File("spine/measurements.csv")
    spine_qc = _File("spine/qc.json")  # segmentation quality control of the lumbar study: verdicts and reasons
    spine_seg = _File("spine/seg.dcm")  # DICOM SEG of spine/labels_sag.nii.gz on the sagittal series
    segment_record = _File("segment.json")  # what the segment stage did per anatomy and the files it wrote
    summary = _File("summary.json")
    findings = _File("findings.json")
    provenance = _File("provenance.json")
    sr = _File("measurements_sr.dcm")
    qa_dir = _File("qa")
    report_html = _File("report.html")
    error_log = _File("error.log")

    def label_tables(self, anatomy: str) -> tuple[Path, Path]:
        """The 3D Slicer colour table and ITK-SNAP label description of the ``anatomy``'s label maps (one pair per
        folder: every label map of a folder shares the registry's ids): ``calf/labels.ctbl``,
        ``calf/labels.itksnap.txt``."""
        folder = self.calf_dir if anatomy == "calf" else self.spine_dir
        return folder / "labels.ctbl", folder / "labels.itksnap.txt"

    def volume(self, role: str) -> Path:
        """Where ingest writes the canonical volume of ``role``."""
        return self.volumes_dir / f"{role}.nii.gz"

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

    def qa(self, name: str) -> Path:
        """A QA picture ``qa/<name>.png``."""
        return self.qa_dir / f"{name}.png"

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


class BatchDir(_Folder):
    """The output root of a batch or workflow: one :class:`StudyDir` per study, the cohort index and the logs."""

    index_html = _File("index.html")
    cohort_csv = _File("cohort.csv")
    logs = _File("logs")

    def study(self, name: str) -> StudyDir:
        """The output folder of the study called ``name``."""
        return StudyDir(self.root / name)

    def studies(self) -> list[StudyDir]:
        """Study folders under the root that have been through ingest, by name."""
        return [StudyDir(d) for d in sorted(self.root.iterdir()) if d.is_dir() and StudyDir(d).series_json.exists()]
