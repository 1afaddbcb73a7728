"""Model store: versioned model folders under `$AERO_HOME/models/<name>/<version>/`.

The forecasting domain writes GRU and Prophet models here; a version folder appears atomically
(written under a temporary name, then renamed) so a reader never loads half a model.

A published folder can still rot (a disk error, a bad copy between volumes, someone editing a
file), so `save` records the sha256 of every file it wrote in `aero_model.json` ("files"), and
`load` verifies them before calling the model's loader. A version that fails verification, or
whose loader raises `ModelLoadError`, is skipped with the reason and the previous version is
tried: predictions keep flowing from the last good model, and the metadata says why it was not
the newest one.

Versions are named `<local time>.<microseconds>-<random>`, so lexical order is save
order (folders written by older code, without the microseconds, still sort before newer ones
saved in the same second).
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

import dagster as dg

from aero_assets.forecast.model_files import ModelLoadError, sha256_file

T = TypeVar("T")
META_FILE = "aero_model.json"


class ModelStoreError(LookupError):
    """No version of a model could be loaded (or the requested one does not exist)."""


@dataclass(frozen=True)
class LoadedModel(Generic[T]):
    """A model loaded from the store, which version it is, and the newer versions skipped on the way (and why)."""

    value: T
    version: str
    path: Path
    skipped: list[tuple[str, str]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


def _file_checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (recursively), keyed by its POSIX path relative to `folder`."""
    return {
        path.relative_to(folder).as_posix(): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != META_FILE
    }


class ModelStoreResource(dg.ConfigurableResource):
    root: str = ".aero/models"

    def model_dir(self, name: str) -> Path:
        return Path(self.root).absolute() / name

    def versions(self, name: str) -> list[str]:
        """Published versions, oldest first (temporary folders of saves in progress start with '.')."""
        d = self.model_dir(name)
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))

    def latest(self, name: str) -> Path | None:
        v = self.versions(name)
        return self.model_dir(name) / v[-1] if v else None

    def save(self, name: str, write: Callable[[Path], None], metadata: dict | None = None) -> Path:
        """Call `write(folder)` to fill a new version folder; record checksums; publish it atomically."""
        version = datetime.now().strftime("%Y%m%dT%H%M%S.%f") + "-" + uuid.uuid4().hex[:6]
        final = self.model_dir(name) / version
        tmp = self.model_dir(name) / f".{version}.tmp"
        tmp.mkdir(parents=True)
        try:
            write(tmp)
            record = {"name": name, "version": version, **(metadata or {}), "files": _file_checksums(tmp)}
            (tmp / META_FILE).write_text(json.dumps(record))
            tmp.rename(final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        return final

    def metadata(self, name: str, version: str) -> dict:
        """The `aero_model.json` of one version (ModelStoreError if the version or its file is missing/invalid)."""
        path = self.model_dir(name) / version / META_FILE
        if not path.is_file():
            raise ModelStoreError(f"model {name!r} version {version!r}: {path} is missing")
        try:
            value = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelStoreError(f"model {name!r} version {version!r}: {path} is not valid JSON ({exc})") from exc
        if not isinstance(value, dict):
            raise ModelStoreError(f"model {name!r} version {version!r}: {path} does not hold a JSON object")
        return value

    def verify(self, name: str, version: str) -> str | None:
        """None when every file recorded at save time is present with its sha256; else the reason it is not.

        Folders saved before checksums were recorded (no "files" key) pass: nothing to compare with.
        """
        folder = self.model_dir(name) / version
        try:
            files = self.metadata(name, version).get("files")
        except ModelStoreError as exc:
            return str(exc)
        if files is None:
            return None
        if not isinstance(files, dict):
            return f"{folder / META_FILE}: 'files' is not a mapping of file -> sha256"
        for relative, expected in sorted(files.items()):
            path = folder / relative
            if not path.is_file():
                return f"{relative} is missing"
            actual = sha256_file(path)
            if actual != expected:
                return f"checksum mismatch for {relative} (recorded {expected[:12]}…, found {actual[:12]}…)"
        return None

    def load(self, name: str, loader: Callable[[Path], T], version: str | None = None) -> LoadedModel[T]:
        """Load `version` (default: the newest), falling back to older versions that verify and load.

        A version is skipped when its checksums do not match or `loader(folder)` raises
        ModelLoadError; each skip is recorded as (version, reason). Other exceptions from the
        loader propagate (they are bugs, not damaged files). Raises ModelStoreError naming every
        version tried when none loads, or when the requested version does not exist.
        """
        available = self.versions(name)
        if version is not None:
            if version not in available:
                raise ModelStoreError(
                    f"model {name!r} has no version {version!r} (available: {', '.join(available) or 'none'})"
                )
            candidates = [v for v in reversed(available) if v <= version]
        else:
            candidates = list(reversed(available))
        if not candidates:
            raise ModelStoreError(f"model {name!r} has no saved versions under {self.model_dir(name)}")

        skipped: list[tuple[str, str]] = []
        for candidate in candidates:
            folder = self.model_dir(name) / candidate
            reason = self.verify(name, candidate)
            if reason is None:
                try:
                    value = loader(folder)
                except ModelLoadError as exc:
                    reason = f"loader failed: {exc}"
                else:
                    return LoadedModel(
                        value=value,
                        version=candidate,
                        path=folder,
                        skipped=skipped,
                        metadata=self.metadata(name, candidate),
                    )
            skipped.append((candidate, reason))
        details = "; ".join(f"{v}: {why}" for v, why in skipped)
        raise ModelStoreError(f"no version of model {name!r} could be loaded (tried {len(skipped)}: {details})")
