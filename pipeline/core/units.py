"""The unit of a metric, read from its name: every measurement carries its unit as the suffix of its name
(``volume_ml``, ``dsca_mm2``, ``ff_pct``), and this module is the one place that turns the suffix into a UCUM unit
(the Unified Code for Units of Measure, unitsofmeasure.org, as DICOM and HL7 use; case-sensitive codes)."""

from __future__ import annotations

#: Proton gyromagnetic ratio / 2 pi in MHz/T (CODATA 2018): a field strength B0 in T gives the imaging frequency
#: ``f0 = 42.577478 * B0`` MHz, and an imaging frequency the field ``B0 = f0 / 42.577478``.
PROTON_GAMMA_MHZ_PER_T = 42.577478

#: name suffix -> (UCUM code, UCUM name). A difference of two percentages (``_pp``, percentage points) is in ``%``;
#: a semi-quantitative grade is the dimensionless annotation ``{grade}``.
SUFFIX_UNITS: tuple[tuple[str, str, str], ...] = (
    ("_mm2", "mm2", "square millimeter"),
    ("_mm", "mm", "millimeter"),
    ("_cm", "cm", "centimeter"),
    ("_ml", "mL", "milliliter"),
    ("_pct", "%", "percent"),
    ("_pp", "%", "percent"),
    ("_grade", "{grade}", "grade"),
)


def split_unit(metric: str) -> tuple[str, str, str] | None:
    """(name without the unit suffix, UCUM code, UCUM name) of a metric or summary key, or None when its name has
    no unit suffix.

    >>> split_unit("calf.right.soleus.volume_ml"), split_unit("spine.L4-L5.dsca_mm2")
    (('calf.right.soleus.volume', 'mL', 'milliliter'), ('spine.L4-L5.dsca', 'mm2', 'square millimeter'))
    >>> split_unit("calf.asymmetry.soleus.ff_diff_pp"), split_unit("calf.qc_status")
    (('calf.asymmetry.soleus.ff_diff', '%', 'percent'), None)
    """
    for suffix, code, name in SUFFIX_UNITS:
        if metric.endswith(suffix):
            return metric[: -len(suffix)], code, name
    return None


def ucum(metric: str) -> str:
    """The UCUM code of a metric's unit; empty for a metric without one (a flag, a category).

    >>> ucum("mercuri_grade"), ucum("girth_diff_cm"), ucum("partial_coverage")
    ('{grade}', 'cm', '')
    """
    found = split_unit(metric)
    return found[1] if found else ""
