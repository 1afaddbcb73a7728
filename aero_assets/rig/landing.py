"""Landing rig readings: CSV files from the inbox next to the `rig.readings` topic, and reading a day back.

A CSV is landed whole into one Parquet file named by its name and content hash, written to a
temporary name and renamed, so a retried landing of the same file rewrites the same file and a
crash leaves nothing half-written; only then does the file move to `processed/` (or, if it cannot
be read at all, to `rejected/` with a `<name>.reason.txt` beside it).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from aero_assets.ids import InvalidIdentifier, validate_id
from aero_assets.landing_state import parse_file_name
from aero_assets.rig.csv_inbox import CsvReport, RejectedFile, read_rig_csv, sha256_of
from aero_assets.rig.schema import LANDED_SCHEMA
from resources.lake import fsync_dir, make_dirs_durable

CSV_DIR = ("rig", "readings", "source=csv")


@dataclass
class CsvLanding:
    name: str
    sha256: str
    rows: int = 0
    bad_lines: int = 0
    days: list[str] = field(default_factory=list)
    path: Path | None = None
    rejected: str | None = None
    moved_to: Path | None = None
    report: CsvReport | None = None
    seconds: float = 0.0


def inbox_dir(inbox_root: Path) -> Path:
    return inbox_root / "rig"


def checked_name(name: str) -> str:
    """A file name from the inbox as a run's config gives it: a bare name, never a path."""
    try:
        return validate_id(name, "inbox file name")
    except InvalidIdentifier as exc:
        raise ValueError(f"{exc}; give the name of a file directly in the rig inbox") from None


def land_csv(inbox_root: Path, lake_root: Path, name: str) -> CsvLanding:
    """Land one inbox file (bounded memory: block by block into a Parquet writer), then move it away."""
    t0 = time.perf_counter()
    name = checked_name(name)
    src = inbox_dir(inbox_root) / name
    if not src.is_file():
        raise FileNotFoundError(f"{src} is not in the inbox (already processed, or never there)")
    sha = sha256_of(src)
    out = CsvLanding(name, sha)
    dest = lake_root.joinpath(*CSV_DIR) / f"{Path(name).stem}-{sha[:16]}.parquet"
    make_dirs_durable(dest.parent)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
    days: set[str] = set()
    try:
        writer = None
        try:
            for table, rep in read_rig_csv(src, f"inbox/rig/{name}", time.time_ns()):
                if writer is None:
                    writer = pq.ParquetWriter(tmp, LANDED_SCHEMA, compression="lz4", use_dictionary=["rig_id", "day"])
                writer.write_table(table)
                days.update(pc.unique(table["day"]).to_pylist())
                out.report = rep
            if writer is None:  # a header and no data lines: an empty, valid file
                writer = pq.ParquetWriter(tmp, LANDED_SCHEMA)
        finally:
            if writer is not None:
                writer.close()
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        tmp.replace(dest)
        fsync_dir(dest.parent)
    except RejectedFile as exc:
        out.rejected = str(exc)
        out.moved_to = _move(src, inbox_dir(inbox_root) / "rejected", sha)
        reason = {"file": name, "sha256": sha, "reason": str(exc), "rejected_at": datetime.now(UTC).isoformat()}
        (out.moved_to.parent / f"{out.moved_to.name}.reason.txt").write_text(
            f"{exc}\n\n{json.dumps(reason, indent=2)}\n")
        out.seconds = time.perf_counter() - t0
        return out
    finally:
        tmp.unlink(missing_ok=True)
    out.path = dest
    out.days = sorted(days)
    if out.report is not None:
        out.rows, out.bad_lines = out.report.rows, out.report.bad_lines
    out.moved_to = _move(src, inbox_dir(inbox_root) / "processed", sha)
    out.seconds = time.perf_counter() - t0
    return out


def _move(src: Path, folder: Path, sha: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / src.name
    if target.exists() and sha256_of(target) != sha:  # an earlier file of that name: keep both
        target = folder / f"{src.stem}-{sha[:12]}{src.suffix}"
    shutil.move(str(src), str(target))
    return target


def day_rows(lake_root: Path, topic: str, day: str) -> pa.Table:
    """Every landed row of `day`, from the topic and the CSV files, with its origin, in landing order.

    Landing order: the topic's rows in offset order, then each CSV file's rows in file order (files
    by name). It decides which copy of a duplicate is kept.
    """
    tables = []
    topic_dir = lake_root / "landing" / topic
    kafka_files = sorted((parse_file_name(p.name)[1:3], p) for p in topic_dir.glob("*.parquet")
                         if parse_file_name(p.name) is not None)
    cond = ds.field("day") == day
    for (partition, _), path in kafka_files:
        t = ds.dataset(str(path), format="parquet").to_table(filter=cond)
        if t.num_rows:
            origin = pc.binary_join_element_wise(f"{topic}/{partition}/", t["_offset"].cast(pa.string()), "")
            t = t.set_column(t.schema.get_field_index("origin"), "origin", origin)
            tables.append(t.select(LANDED_SCHEMA.names).cast(LANDED_SCHEMA))
    for path in sorted(lake_root.joinpath(*CSV_DIR).glob("*.parquet")):
        t = ds.dataset(str(path), format="parquet").to_table(filter=cond)
        if t.num_rows:
            tables.append(t.select(LANDED_SCHEMA.names).cast(LANDED_SCHEMA))
    return pa.concat_tables(tables) if tables else LANDED_SCHEMA.empty_table()


def count_day_rows(lake_root: Path, topic: str, day: str) -> int:
    """The day's landed rows counted straight from the files (for the check, independent of `day_rows`)."""
    files = [str(p) for p in (lake_root / "landing" / topic).glob("*.parquet") if parse_file_name(p.name)]
    files += [str(p) for p in lake_root.joinpath(*CSV_DIR).glob("*.parquet")]
    if not files:
        return 0
    return int(sum(ds.dataset(f, format="parquet").count_rows(filter=ds.field("day") == day) for f in files))


def days_of(paths: list[Path]) -> list[str]:
    out: set[str] = set()
    for p in paths:
        col = pq.read_table(p, columns=["day"])["day"]
        out.update(v for v in pc.unique(col).to_pylist() if v)
    return sorted(out)


__all__ = ["CsvLanding", "count_day_rows", "day_rows", "days_of", "inbox_dir", "land_csv"]
