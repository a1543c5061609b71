"""Colour and name tables beside every label map, so that viewers show structure names, not numbers.

* 3D Slicer colour table (``.ctbl``; Slicer's ``vtkMRMLColorTableStorageNode`` text format): a ``#`` comment header,
  then one line per label ``id name R G B A`` (0-255), background 0 included.
* ITK-SNAP label description (``.txt``; ITK-SNAP's "Label Description File" format): ``IDX R G B A VIS MSH "LABEL"``
  with A in 0-1 and VIS/MSH visibility flags.

Names and colours come from the label registry (``configs/labels.yaml``); ids are the ids of the label maps.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.core.atomic import write_text
from pipeline.core.labels import Registry
from pipeline.core.layout import StudyDir


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    """``"#e6194b"`` -> (230, 25, 75)."""
    h = hex_colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def slicer_color_table(reg: Registry) -> str:
    """The 3D Slicer colour table of ``reg``'s label ids.

    >>> from pipeline.core.labels import registry
    >>> slicer_color_table(registry("calf")).splitlines()[3]
    '1 gastrocnemius_medial_left 230 25 75 255'
    """
    lines = [f"# legmri {reg.anatomy} label map colour table (3D Slicer .ctbl)",
             f"# {len(reg.labels) + 1} values", "0 background 0 0 0 0"]
    lines += [f"{lab.id} {lab.name} {' '.join(str(c) for c in _rgb(lab.color))} 255" for lab in reg.labels]
    return "\n".join(lines) + "\n"


def itksnap_label_description(reg: Registry) -> str:
    """The ITK-SNAP label description file of ``reg``'s label ids.

    >>> from pipeline.core.labels import registry
    >>> itksnap_label_description(registry("calf")).splitlines()[-1].split()[-1]
    '"subcutaneous_fat_right"'
    """
    lines = ["################################################", "# ITK-SnAP Label Description File",
             f"# legmri {reg.anatomy} label map", "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL",
             "################################################",
             '    0     0    0    0        0  0  0    "Clear Label"']
    for lab in reg.labels:
        r, g, b = _rgb(lab.color)
        lines.append(f'{lab.id:5d} {r:5d} {g:4d} {b:4d}        1  1  1    "{lab.name}"')
    return "\n".join(lines) + "\n"


def read_slicer_color_table(text: str) -> dict[int, tuple[str, tuple[int, int, int, int]]]:
    """Parse a Slicer colour table as Slicer does (comment lines skipped; ``id name R G B A``): id -> (name, RGBA).

    >>> read_slicer_color_table("# c\\n0 background 0 0 0 0\\n3 soleus_left 255 225 25 255\\n")[3]
    ('soleus_left', (255, 225, 25, 255))
    """
    out: dict[int, tuple[str, tuple[int, int, int, int]]] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        i, name, r, g, b, a = line.split()
        out[int(i)] = (name, (int(r), int(g), int(b), int(a)))
    return out


def write_label_tables(study: StudyDir, anatomy: str) -> tuple[Path, Path]:
    """Write the Slicer and ITK-SNAP tables of ``anatomy`` beside its label maps (:meth:`StudyDir.label_tables`)."""
    from pipeline.core.labels import registry

    reg = registry(anatomy)
    ctbl, snap = study.label_tables(anatomy)
    write_text(ctbl, slicer_color_table(reg))
    write_text(snap, itksnap_label_description(reg))
    return ctbl, snap
