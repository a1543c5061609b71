"""YAML configuration loading, validated against a JSON Schema kept beside it in ``configs/schemas/``.

Every configuration file ``configs/NAME.yaml`` has a schema ``configs/schemas/NAME.schema.yaml``. Errors name the
file, the offending key path and what was received, e.g.::

    configs/rules.yaml: at 'rules[3].points': -2 is less than the minimum of 0.

The configuration folder defaults to the project's ``configs/``; ``LEGMRI_CONFIG_DIR`` or an explicit path overrides.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG_DIR = PROJECT_ROOT / "configs"


def config_dir() -> Path:
    """The active configuration folder: ``$LEGMRI_CONFIG_DIR`` if set, else the project's ``configs/``."""
    env = os.environ.get("LEGMRI_CONFIG_DIR")
    return Path(env) if env else DEFAULT_CONFIG_DIR


#: Limits checked before a YAML file is parsed: its size, and the number of aliases (``*name``) in it. Study,
#: clinical and configuration files need few or none; thousands of nested aliases are a "billion laughs" bomb that
#: expands to gigabytes when loaded.
MAX_YAML_BYTES = 1 << 20
MAX_YAML_ALIASES = 100
#: PyYAML's safe loader, in libyaml's C implementation where PyYAML was built with it (the same documents and
#: objects, about ten times faster than the pure-Python one: the configuration files took a second to parse).
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file safely (``yaml.safe_load``: no tags that build objects); errors name the file and the line.

    A file over :data:`MAX_YAML_BYTES`, not a regular file, or with more than :data:`MAX_YAML_ALIASES` aliases is
    refused before it is parsed."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise ConfigError("is not a file (a folder or a device).", path=path, fix="give the path of a YAML file.")
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise ConfigError(f"is {size} bytes; a YAML input may hold at most {MAX_YAML_BYTES}.", path=path,
                              fix="give the intended file (study, clinical and configuration files are small).")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError("file not found.", path=path, fix="check the path or restore the file.") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("is not UTF-8 text.", path=path, fix="save the file as UTF-8 YAML.") from exc
    try:
        aliases = sum(isinstance(e, yaml.AliasEvent) for e in yaml.parse(text, Loader=SAFE_LOADER))
        if aliases > MAX_YAML_ALIASES:
            raise ConfigError(f"holds {aliases} YAML aliases (at most {MAX_YAML_ALIASES}); nested aliases expand "
                              "without bound.", path=path, fix="write the values out instead of aliasing them.")
        return yaml.load(text, Loader=SAFE_LOADER)  # a safe loader: no tags that build objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"is not valid YAML{where}: {problem}.", path=path, fix="correct the YAML syntax.") from exc


def _key_path(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<top level>"


def validate(data: Any, schema: dict, *, path: str | Path, name: str = "") -> None:
    """Validate ``data`` against a JSON Schema; raise :class:`ConfigError` naming the file and the key path.

    All violations are reported at once, one per line, in document order.
    """
    import jsonschema

    validator_cls = jsonschema.validators.validator_for(schema)
    validator = validator_cls(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        lines = [f"at '{_key_path(e.absolute_path)}': {e.message}" for e in errors[:20]]
        more = f" (and {len(errors) - 20} more)" if len(errors) > 20 else ""
        what = f" {name}" if name else ""
        raise ConfigError(
            f"does not match the{what} schema:\n  " + "\n  ".join(lines) + more,
            path=path,
            fix="edit the listed keys to match the schema in configs/schemas/.",
        )


def schema_paths(name: str, directory: Path | None = None) -> list[Path]:
    """The schemas configuration ``name`` must match: this legmri's own (``configs/schemas`` of the package: it
    states every key this version reads, so a configuration folder copied from an older legmri is refused with the
    missing keys named, not met by a KeyError mid-run), then the active folder's, where it has another one."""
    own = DEFAULT_CONFIG_DIR / "schemas" / f"{name}.schema.yaml"
    local = (directory or config_dir()) / "schemas" / f"{name}.schema.yaml"
    out = [p for p in (own, local) if p.exists()]
    if not out:
        raise ConfigError(f"no schema for configuration '{name}'.", path=DEFAULT_CONFIG_DIR / "schemas",
                          fix=f"add schemas/{name}.schema.yaml.")
    return out if len(out) < 2 or out[0].resolve() != out[1].resolve() else out[:1]


@lru_cache(maxsize=64)
def _load_cached(path_str: str, mtime_ns: int, schemas: tuple[tuple[str, int], ...], name: str) -> Any:
    data = read_yaml(path_str)
    for schema_str, _ in schemas:
        validate(data, read_yaml(schema_str), path=path_str, name=name)
    return data


def load_config(name: str, path: str | Path | None = None) -> Any:
    """Load and validate configuration ``name`` (e.g. ``"labels"``) from ``path`` or the active folder.

    The returned object is a fresh deep copy: callers may modify it freely.
    """
    cfg_path = Path(path) if path is not None else config_dir() / f"{name}.yaml"
    if not cfg_path.exists():
        raise ConfigError("configuration file not found.", path=cfg_path,
                          fix=f"restore configs/{name}.yaml or point LEGMRI_CONFIG_DIR at a folder holding it.")
    schemas = tuple((str(p), p.stat().st_mtime_ns) for p in schema_paths(name, cfg_path.parent))
    data = _load_cached(str(cfg_path.resolve()), cfg_path.stat().st_mtime_ns, schemas, name)
    return copy.deepcopy(data)


def config_hash(obj: Any) -> str:
    """sha256 of a canonical JSON serialisation (sorted keys) of a configuration object."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def resolved_config_record(names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Per configuration name: the file it was read from, the resolved (validated) content and its
    :func:`config_hash`, as recorded under ``configs`` in provenance.json."""
    record: dict[str, dict[str, Any]] = {}
    for name in names:
        data = load_config(name)
        record[name] = {"file": str(config_dir() / f"{name}.yaml"), "sha256": config_hash(data), "resolved": data}
    return record
