"""Small shared helpers for model folders: one error type for "this folder does not hold a usable model".

The model store falls back to an older version when a newer one cannot be loaded, so every
forecaster's `load` must fail in one recognisable way (`ModelLoadError`) whether a file is
missing, truncated, overwritten or written by an incompatible version; anything else is a bug
and should surface as such.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


class ModelLoadError(Exception):
    """A model folder is missing a file, or a file is corrupted, truncated or incompatible."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so large weight files do not need to fit in memory twice."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def require_file(folder: Path, name: str) -> Path:
    """`folder / name`, or ModelLoadError naming the missing file."""
    path = Path(folder) / name
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing")
    return path


def read_json(folder: Path, name: str) -> dict[str, Any]:
    """A JSON object from `folder / name`; ModelLoadError if missing, unreadable or not an object."""
    path = require_file(folder, name)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise ModelLoadError(f"{path} does not hold a JSON object")
    return value


def write_json(folder: Path, name: str, value: dict[str, Any]) -> Path:
    """Write a JSON object (pretty, so a person can read a model's settings with `cat`)."""
    path = Path(folder) / name
    path.write_text(json.dumps(value, indent=2, sort_keys=True), encoding="utf-8")
    return path
