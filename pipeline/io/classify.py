"""Series-role classification from DICOM attributes and geometry, driven by ``configs/series_roles.yaml``.

Anatomy (calf / lumbar / other), contrast (Dixon water, fat, in-phase, opposed-phase, FF map; T1, T2, STIR) and
localizer status come from ordered regular-expression rules over ImageType tokens, SeriesDescription, ProtocolName,
SequenceName and BodyPartExamined. The plane comes from geometry only: the dominant axis of the slice normal.

Patterns are compiled with RE2 (google-re2), whose matching time is linear in the text: a user's rule such as
``(a+)+$`` cannot hang ingestion by catastrophic backtracking as it would with Python's ``re``. RE2 has no
look-around or back-references; a rule that uses them is refused with the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import re2
from pydicom.dataset import Dataset

from pipeline.core.config import config_dir, load_config
from pipeline.core.errors import ConfigError

PLANE_ABBREV = {"axial": "ax", "sagittal": "sag", "coronal": "cor"}


@dataclass(frozen=True)
class Classification:
    anatomy: str  # calf | lumbar | other
    contrast: str  # water | fat | inphase | outphase | ffmap | stir | pd | t2 | t1 | unknown
    plane: str  # axial | sagittal | coronal
    obliquity_deg: float  # angle between the slice normal and the nearest patient axis
    localizer: bool
    dixon: bool

    @property
    def base_role(self) -> str | None:
        """The role before de-duplication, or None for series that get an ``other_<n>`` role."""
        if self.localizer or self.contrast == "unknown":
            return None
        if self.anatomy == "calf":
            return f"calf_{self.contrast}"
        if self.anatomy == "lumbar":
            return f"lumbar_{PLANE_ABBREV[self.plane]}_{self.contrast}"
        return None


def plane_of(iop: np.ndarray) -> tuple[str, float]:
    """Imaging plane from ImageOrientationPatient: the slice normal's dominant LPS axis, and the obliquity in degrees.

    >>> plane_of(np.array([1, 0, 0, 0, 1, 0]))
    ('axial', 0.0)
    >>> plane_of(np.array([0, 1, 0, 0, 0, -1]))
    ('sagittal', 0.0)
    """
    normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
    normal /= np.linalg.norm(normal)
    axis = int(np.argmax(np.abs(normal)))
    angle = float(np.degrees(np.arccos(min(1.0, abs(normal[axis])))))
    return ("sagittal", "coronal", "axial")[axis], round(angle, 3)


@dataclass(frozen=True)
class _Rule:
    name: str | None
    any: tuple[tuple[str, Any], ...]
    all: tuple[tuple[str, Any], ...]


def compile_pattern(rx: str) -> Any:
    """A case-insensitive RE2 pattern (linear-time matching; raises ``re2.error`` when RE2 cannot compile it).

    >>> compile_pattern("^(W|WATER)$").search("water") is not None
    True
    """
    options = re2.Options()
    options.case_sensitive = False
    options.log_errors = False  # the error is raised (and reported once), not also logged by the C++ library
    return re2.compile(rx, options)


def _compile(rules: list[dict], section: str, source: str) -> list[_Rule]:
    out = []
    for i, r in enumerate(rules or []):
        comp: dict[str, tuple] = {}
        for kind in ("any", "all"):
            pats = []
            for keyword, rx in (r.get(kind) or {}).items():
                try:
                    pats.append((keyword, compile_pattern(str(rx))))
                except re2.error as exc:
                    raise ConfigError(f"at '{section}[{i}].{kind}.{keyword}': invalid regular expression {rx!r}: "
                                      f"{exc}.", path=source,
                                      fix="correct the regular expression (RE2 syntax: no look-around or "
                                          "back-references).") from None
            comp[kind] = tuple(pats)
        out.append(_Rule(r.get("name"), comp["any"], comp["all"]))
    return out


class RoleRules:
    """Compiled classification rules (the project's, with a user's extra rules tried first)."""

    SECTIONS = ("localizer", "dixon", "anatomy", "contrast")

    def __init__(self, config: dict[str, Any], source: str, extra: list[tuple[dict, str]] = ()):  # type: ignore
        self.sections: dict[str, list[_Rule]] = {}
        for sec in self.SECTIONS:
            rules: list[_Rule] = []
            for cfg, src in [*extra, (config, source)]:
                rules.extend(_compile(cfg.get(sec, []), sec, src))
            self.sections[sec] = rules
        self.fallback = dict(config.get("anatomy_fallback", {}))
        for cfg, _ in extra:
            self.fallback.update(cfg.get("anatomy_fallback", {}))
        self.multi_echo: dict[str, Any] = dict(config.get("multi_echo", {}))
        for cfg, _ in extra:
            self.multi_echo.update(cfg.get("multi_echo", {}))

    @classmethod
    def load(cls, study_dir: Path | None = None, extra_file: str | Path | None = None) -> RoleRules:
        base_path = config_dir() / "series_roles.yaml"
        base = load_config("series_roles", base_path)
        extras: list[tuple[dict, str]] = []
        for p in (Path(extra_file) if extra_file else None, study_dir / "series_roles.yaml" if study_dir else None):
            if p is not None and p.exists():
                extras.insert(0, (load_config("series_roles", p), str(p)))
        return cls(base, str(base_path), extras)

    def known_roles(self) -> list[str]:
        """The roles a series can have, before a ``_2``, ``_3`` ... suffix: ``calf_<contrast>`` and
        ``lumbar_<sag|ax|cor>_<contrast>`` for every contrast the rules name, ``calf_anatomical`` (one anatomical calf
        series), ``calf_echo`` (an echo of a multi-echo acquisition), ``other`` and ``localizer``.

        >>> roles = RoleRules({"contrast": [{"name": "water", "any": {"ImageType": "^W$"}}]}, "-").known_roles()
        >>> roles
        ['calf_water', 'calf_anatomical', 'calf_echo', 'lumbar_ax_water', 'lumbar_sag_water', 'lumbar_cor_water', 'other', 'localizer']
        """
        contrasts = self.contrasts()
        return [*(f"calf_{c}" for c in contrasts), "calf_anatomical", "calf_echo",
                *(f"lumbar_{p}_{c}" for p in PLANE_ABBREV.values() for c in contrasts), "other", "localizer"]

    def contrasts(self) -> list[str]:
        """The contrast names of the rules, in their order."""
        return list(dict.fromkeys(r.name for r in self.sections["contrast"] if r.name))

    def is_known_role(self, role: str) -> bool:
        """Whether ``role`` is one of :meth:`known_roles`, with or without a ``_<n>`` suffix.

        >>> rules = RoleRules({"contrast": [{"name": "t2", "any": {"SeriesDescription": "t2"}}]}, "-")
        >>> rules.is_known_role("lumbar_ax_t2_3"), rules.is_known_role("other_1"), rules.is_known_role("calf_opposed")
        (True, True, False)
        """
        base = re2.sub(r"_[0-9]+$", "", role)
        return base in self.known_roles()

    @staticmethod
    def _values(ds: Dataset, keyword: str) -> list[str]:
        v = ds.get(keyword)
        if v is None:
            return []
        if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
            return [str(x).strip() for x in v]
        return [str(v).strip()]

    def _matches(self, rule: _Rule, ds: Dataset) -> bool:
        def hit(keyword: str, rx: Any) -> bool:
            return any(rx.search(val) for val in self._values(ds, keyword))

        if rule.all and not all(hit(k, rx) for k, rx in rule.all):
            return False
        if rule.any:
            return any(hit(k, rx) for k, rx in rule.any)
        return True

    def is_phase_image(self, image_type: tuple[str, ...]) -> bool:
        """Whether a stack with this ImageType holds phase (multi_echo.phase_image_type).

        >>> RoleRules({"multi_echo": {"phase_image_type": "^(P|PHASE)$"}}, "-").is_phase_image(("ORIGINAL", "P"))
        True
        """
        rx = compile_pattern(str(self.multi_echo.get("phase_image_type", "^(P|PHASE)$")))
        return any(rx.search(str(t)) for t in image_type)

    def phase_range(self, manufacturer: str) -> tuple[float, float] | None:
        """Stored phase range of the first multi_echo.phase_ranges entry whose regex matches ``manufacturer``."""
        for item in self.multi_echo.get("phase_ranges", []) or []:
            if compile_pattern(str(item["manufacturer"])).search(manufacturer or ""):
                lo, hi = item["range"]
                return float(lo), float(hi)
        return None

    def first(self, section: str, ds: Dataset) -> _Rule | None:
        return next((r for r in self.sections[section] if self._matches(r, ds)), None)

    def classify(self, ds: Dataset, iop: np.ndarray, image_type: tuple[str, ...] | None = None) -> Classification:
        """Classify one stack from its first header (``image_type`` overrides ImageType, e.g. per-frame type)."""
        if image_type is not None:
            ds = _with_image_type(ds, image_type)
        plane, oblq = plane_of(iop)
        localizer = self.first("localizer", ds) is not None
        dixon = self.first("dixon", ds) is not None
        anat_rule = self.first("anatomy", ds)
        anatomy = anat_rule.name if anat_rule else None
        contrast_rule = self.first("contrast", ds)
        contrast = contrast_rule.name if contrast_rule else "unknown"
        if contrast in {"water", "fat", "inphase", "outphase", "ffmap"} and not dixon:
            dixon = True
        if anatomy is None:
            anatomy = self.fallback.get("dixon", "other") if dixon else "other"
        if anatomy == "calf" and plane != "axial":
            # Calf muscles are quantified on axial stacks; other planes are kept as 'other' series.
            anatomy = "other"
        return Classification(str(anatomy), str(contrast), plane, oblq, localizer, dixon)


def _with_image_type(ds: Dataset, image_type: tuple[str, ...]) -> Dataset:
    shallow = Dataset()
    for kw in ("SeriesDescription", "ProtocolName", "SequenceName", "BodyPartExamined", "Manufacturer",
               "ScanningSequence"):
        if kw in ds:
            setattr(shallow, kw, ds.get(kw))
    shallow.ImageType = list(image_type)
    return shallow
