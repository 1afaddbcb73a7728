"""Small shared helpers for model folders: one error type for "this folder does not hold a usable model".

The model store falls back to an older version when a newer one cannot be loaded, so every
forecaster's `load` must fail in one recognisable way (`ModelLoadError`) whether a file is
missing, truncated, overwritten or written by an incompatible version; anything else is a bug
and should surface as such.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


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


def save_model_folder(folder: Path, data_name: str, write_data: Callable[[Path], object], meta_name: str,
                      meta: dict[str, Any]) -> list[Path]:
    """Create `folder`, write the model's data file with `write_data(path)`, then its JSON description.

    Returns the files written: [data file, JSON file].
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data_path = folder / data_name
    write_data(data_path)
    return [data_path, write_json(folder, meta_name, meta)]


def open_model_folder(folder: Path, meta_name: str, data_name: str) -> tuple[dict[str, Any], Path]:
    """(the JSON description, the data file's path) of a folder written by `save_model_folder`.

    ModelLoadError if the JSON file is missing or not an object, or the data file is missing.
    """
    meta = read_json(folder, meta_name)
    return meta, require_file(folder, data_name)


def read_model_data(path: Path, read: Callable[[Path], T], problem: str) -> T:
    """`read(path)`; any exception it raises becomes ModelLoadError "<path> <problem> (<type>: <text>)".

    Model libraries raise all sorts (json errors, EOFError, UnpicklingError, zipfile errors, ...) for
    a truncated or foreign file, and every one of them means "not a usable model".
    """
    try:
        return read(path)
    except Exception as exc:
        raise ModelLoadError(f"{path} {problem} ({type(exc).__name__}: {exc})") from exc


@contextmanager
def describes_model(folder: Path, meta_name: str, kind: str) -> Iterator[None]:
    """Turn a KeyError/TypeError/ValueError while building a model from its JSON into ModelLoadError."""
    try:
        yield
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"{Path(folder) / meta_name} does not describe a {kind} model ({exc!r})") from exc
