"""Model store: versioned model folders under `$AERO_HOME/models/<name>/<version>/`.

The forecasting domain writes GRU and Prophet models here; a version folder appears atomically
(written under a temporary name, then renamed) so a reader never loads half a model.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import dagster as dg


class ModelStoreResource(dg.ConfigurableResource):
    root: str = ".aero/models"

    def model_dir(self, name: str) -> Path:
        return Path(self.root).absolute() / name

    def versions(self, name: str) -> list[str]:
        d = self.model_dir(name)
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))

    def latest(self, name: str) -> Path | None:
        v = self.versions(name)
        return self.model_dir(name) / v[-1] if v else None

    def save(self, name: str, write: Callable[[Path], None], metadata: dict | None = None) -> Path:
        """Call `write(folder)` to fill a new version folder; publish it atomically."""
        version = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        final = self.model_dir(name) / version
        tmp = self.model_dir(name) / f".{version}.tmp"
        tmp.mkdir(parents=True)
        try:
            write(tmp)
            (tmp / "aero_model.json").write_text(json.dumps({"name": name, "version": version, **(metadata or {})}))
            tmp.rename(final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        return final
