"""The lake: Parquet datasets under `$AERO_HOME/lake`, one folder per asset, hive-style partitions.

Files are written to a temporary name, fsynced and renamed into place, so a reader (or a crashed
writer's successor) sees either the whole file or none of it. That is what makes "commit Kafka
offsets only after the file is durable" mean something.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """Dictionary-encode only low-cardinality string columns (channel, run id, event).

    Trying dictionaries on float values and nanosecond timestamps costs more than half the write
    time and gains nothing (measured: 0.50 s -> 0.21 s for 5M samples).
    """
    return [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_dictionary(f.type)
            or pa.types.is_large_string(f.type)]


def write_parquet_atomic(table: pa.Table, path: Path, *, compression: str = "lz4") -> int:
    """Write `table` to `path` durably (tmp file + fsync + rename + dir fsync); return bytes written."""
    make_dirs_durable(path.parent)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        pq.write_table(table, tmp, compression=compression, row_group_size=1_000_000,
                       use_dictionary=_dictionary_columns(table.schema))
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return path.stat().st_size


def fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs_durable(d: Path) -> None:
    """mkdir -p, then fsync the parent of every folder created (a new run_id=... folder included)."""
    created = []
    while not d.exists():
        created.append(d)
        d = d.parent
    if not created:
        return
    created[0].mkdir(parents=True, exist_ok=True)
    for c in created:
        fsync_dir(c.parent)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """tmp file + fsync + rename + directory fsync: the file is whole or absent after a crash."""
    make_dirs_durable(path.parent)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def hive_dir(root: Path, parts: Iterable[tuple[str, str]]) -> Path:
    out = root
    for k, v in parts:
        out = out / f"{k}={v}"
    return out


class LakeResource(dg.ConfigurableResource):
    """Root of the Parquet lake. Asset key `windtunnel/raw_run` lives in `<root>/windtunnel/raw_run`."""

    root: str = ".aero/lake"
    exports_root: str = ".aero/exports"
    inbox_root: str = ".aero/inbox"  # where files are dropped for landing (e.g. the rig's CSVs under rig/)

    @property
    def path(self) -> Path:
        return Path(self.root).absolute()

    def asset_dir(self, asset_key: dg.AssetKey | str) -> Path:
        parts = asset_key.path if isinstance(asset_key, dg.AssetKey) else asset_key.split("/")
        return self.path.joinpath(*parts)

    @property
    def exports(self) -> Path:
        return Path(self.exports_root).absolute()

    @property
    def inbox(self) -> Path:
        return Path(self.inbox_root).absolute()

    def landing_dir(self, topic: str) -> Path:
        return self.path / "landing" / topic

    def partition_dir(self, asset_key: dg.AssetKey | str, **partitions: str) -> Path:
        return hive_dir(self.asset_dir(asset_key), partitions.items())
