"""CSV files from the rig inbox -> landed rows, streamed in bounded memory, every line accounted for.

A file is either rejected as a whole (with a reason a person can act on: empty, no header, a
required column missing, not a CSV at all) or read to its end, where every data line becomes a
landed row: good lines with their values, bad lines (too few or too many fields, a truncated last
line, bytes that are not UTF-8, values that do not parse) with null fields and the problem, so
cleaning quarantines them with that reason. Origins are `<file>:<line>`, the line as an editor
counts it (header = line 1).

Dialects handled: `,` `;` or tab as delimiter (sniffed from the header), a UTF-8 byte-order mark,
CRLF line ends, blank lines (skipped, not rows), header names in any case with the seed's names
(`timestamp`, `temperature`, `pressure`, `uptime`) or the wire names; `rig_id` may be absent, then
the file name says which rig (`<rig_id>.csv` or `<rig_id>__<anything>.csv`).
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from aero_assets.ids import InvalidIdentifier, validate_id
from aero_assets.rig.parse import COLUMNS, parse_raw

ALIASES = {"timestamp": "ts", "time": "ts", "ts": "ts", "temperature": "temperature_c",
           "temperature_c": "temperature_c", "pressure": "pressure_hpa", "pressure_hpa": "pressure_hpa",
           "uptime": "uptime_h", "uptime_h": "uptime_h", "rig_id": "rig_id", "rig": "rig_id"}
REQUIRED = ("ts", "temperature_c", "pressure_hpa", "uptime_h")
BLOCK_BYTES = 2 * 1024 * 1024  # one parse block (the reader prefetches a few): memory stays flat whatever the file size
SNIFF_BYTES = 64 * 1024


class RejectedFile(ValueError):
    """The file cannot be read as rig readings at all; the message is the reason file's text."""


@dataclass
class CsvReport:
    lines: int = 0
    rows: int = 0
    bad_lines: int = 0
    delimiter: str = ","
    columns: dict[str, str] = field(default_factory=dict)  # header name -> landed column
    ignored_columns: list[str] = field(default_factory=list)
    rig_from_file_name: str | None = None


def sha256_of(path: Path, chunk: int = 4 * 1024 * 1024) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _rig_from_name(path: Path) -> str | None:
    stem = path.stem.split("__")[0]
    try:
        return validate_id(stem, "rig id")
    except InvalidIdentifier:
        return None


def sniff(path: Path) -> tuple[str, list[str], bool]:
    """(delimiter, header names, has a UTF-8 BOM), or RejectedFile."""
    with path.open("rb") as fh:
        head = fh.read(SNIFF_BYTES)
    if not head.strip():
        raise RejectedFile("the file is empty")
    bom = head.startswith(b"\xef\xbb\xbf")
    if bom:
        head = head[3:]
    first = head.splitlines()[0] if head.splitlines() else b""
    if b"\x00" in head:
        raise RejectedFile("the file holds NUL bytes: it is not a text CSV (binary or UTF-16?)")
    try:
        text = first.decode("utf-8")
    except UnicodeDecodeError:
        raise RejectedFile("the header line is not UTF-8 text") from None
    delimiter = max((",", ";", "\t"), key=text.count)
    # the csv module reads the header as the data will be read: a quoted name may hold the delimiter
    names = [n.replace("\ufeff", "").strip().strip('"').strip().lower()
             for n in next(csv.reader([text], delimiter=delimiter))]
    if not any(n in ALIASES for n in names):
        looks_like_data = bool(names) and names[0][:1].isdigit()
        raise RejectedFile(("no header: the first line looks like data" if looks_like_data else
                            f"unrecognised header {text[:200]!r}") +
                           f"; expected columns {', '.join(('rig_id', *REQUIRED))} (or the seed's timestamp, "
                           "temperature, pressure, uptime)")
    return delimiter, names, bom


def read_rig_csv(path: Path, display_name: str, landed_ns: int, block_bytes: int = BLOCK_BYTES
                 ) -> Iterator[tuple[pa.Table, CsvReport]]:
    """Landed-schema tables, block by block; raises RejectedFile before yielding anything if unusable."""
    delimiter, names, _ = sniff(path)  # the reader skips the header line, BOM included
    mapping = {}
    for n in names:
        target = ALIASES.get(n)
        if target and target not in mapping.values():
            mapping[n] = target
    missing = [c for c in REQUIRED if c not in mapping.values()]
    if missing:
        raise RejectedFile(f"required column(s) missing: {', '.join(missing)} (header has {', '.join(names)})")
    rep = CsvReport(delimiter=delimiter, columns=mapping, ignored_columns=[n for n in names if n not in mapping])
    file_rig = None
    if "rig_id" not in mapping.values():
        file_rig = _rig_from_name(path)
        if file_rig is None:
            raise RejectedFile("no rig_id column and the file name is not a rig id (name it <rig_id>.csv or "
                               "<rig_id>__<anything>.csv, or add a rig_id column)")
        rep.rig_from_file_name = file_rig
    invalid: list[tuple[int, str, int, int]] = []
    recovered: list[tuple[int, list[str]]] = []  # good lines a stray quote had glued to a bad one

    def on_invalid(row) -> str:
        text, number = row.text or "", int(row.number or -1)
        lines = text.rstrip("\r\n").split("\n")
        if len(lines) == 1 or number < 0:
            invalid.append((number, text, row.expected_columns, row.actual_columns))
            return "skip"
        # an unbalanced quote made one "row" of several lines: each line is a line of the file, read alone
        for k, line in enumerate(lines):
            line = line.rstrip("\r")
            if not line.strip():
                invalid.append((number + k, "", row.expected_columns, 0))  # blank: numbered, not a reading
                continue
            fields = next(csv.reader([line], delimiter=delimiter))
            if len(fields) == len(names) and '"' not in line:
                recovered.append((number + k, fields))
            else:
                invalid.append((number + k, line, row.expected_columns, len(fields)))
        return "skip"

    column_names = [f"c{i}" for i in range(len(names))]
    reader = pcsv.open_csv(
        path,
        read_options=pcsv.ReadOptions(block_size=block_bytes, use_threads=False, skip_rows=1,
                                      column_names=column_names),
        parse_options=pcsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid,
                                        ignore_empty_lines=False),
        convert_options=pcsv.ConvertOptions(column_types=dict.fromkeys(column_names, pa.binary()),
                                            strings_can_be_null=False, quoted_strings_can_be_null=False))
    by_target = {t: column_names[names.index(n)] for n, t in mapping.items()}
    next_line = 2  # the header is line 1
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            batch = None
        except pa.ArrowInvalid as exc:
            raise RejectedFile(f"the file cannot be parsed as CSV after line {next_line - 1}: {exc}") from None
        n = 0 if batch is None else batch.num_rows
        bad = [b for b in invalid if b[0] >= next_line or b[0] < 0]
        invalid.clear()
        saved, recovered[:] = list(recovered), []
        # lines of this block: the good rows in order, with the bad (and recovered) lines' numbers taken out
        bad_numbers = {b[0] for b in bad} | {r[0] for r in saved}
        lines, line = [], next_line
        while len(lines) < n:
            if line not in bad_numbers:
                lines.append(line)
            line += 1
        next_line = max([line, *[b + 1 for b in bad_numbers]]) if (n or bad or saved) else next_line
        tables = []
        if n:
            # a blank line parses as a row of empty cells: not a reading (its line number is still used up)
            blank = np.ones(n, dtype=bool)
            for c in column_names:
                blank &= np.asarray(pc.equal(pc.binary_length(batch.column(c)), 0))
            if blank.any():
                keep = ~blank
                batch = batch.filter(pa.array(keep))
                lines = [ln for ln, k in zip(lines, keep, strict=True) if k]
                n = batch.num_rows
        if n:
            raw, problems = {}, np.full(n, "", dtype=object)
            for target, col in by_target.items():
                raw[target], p = _utf8(batch.column(col), target)
                problems = np.where(problems == "", p, np.where(p == "", problems, problems + "; " + p))
            if file_rig is not None:
                raw["rig_id"] = pa.array([file_rig] * n, pa.string())
            origin = pa.array([f"{display_name}:{ln}" for ln in lines], pa.string())
            tables.append(parse_raw(raw, origin, landed_ns, problems))
        if saved:
            k = len(saved)
            raw = {t: pa.array([r[1][names.index(h)] for r in saved], pa.string()) for h, t in mapping.items()}
            if file_rig is not None:
                raw["rig_id"] = pa.array([file_rig] * k, pa.string())
            origin = pa.array([f"{display_name}:{r[0]}" for r in saved], pa.string())
            tables.append(parse_raw(raw, origin, landed_ns))
        real_bad = [b for b in bad if b[1].strip()]  # a blank line is not a reading
        if real_bad:
            k = len(real_bad)
            problems = np.array([f"line has {b[3]} field(s), expected {b[2]}: {b[1][:200]!r}" for b in real_bad],
                                dtype=object)
            origin = pa.array([f"{display_name}:{b[0]}" for b in real_bad], pa.string())
            raw = {c: pa.nulls(k, pa.string()) for c in COLUMNS}
            if file_rig is not None:
                raw["rig_id"] = pa.array([file_rig] * k, pa.string())
            tables.append(parse_raw(raw, origin, landed_ns, problems))
        if tables:
            out = pa.concat_tables(tables)
            rep.rows += out.num_rows
            rep.bad_lines += len(real_bad)
            rep.lines = next_line - 1
            yield out, rep
        if batch is None:
            return


def _utf8(col: pa.ChunkedArray | pa.Array, name: str) -> tuple[pa.Array, np.ndarray]:
    """Binary cells as text; cells that are not UTF-8 become null with a problem (Latin-1 bytes, say)."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    try:
        return col.cast(pa.string()), np.full(len(col), "", dtype=object)
    except pa.ArrowInvalid:
        values, problems = [], []
        for v in col.to_pylist():  # only a block with bad bytes gets here; each value is checked once
            try:
                values.append(None if v is None else v.decode("utf-8"))
                problems.append("")
            except UnicodeDecodeError:
                values.append(None)
                problems.append(f"{name} {v[:60].decode('latin-1')!r} is not UTF-8 text (Latin-1?)")
        return pa.array(values, pa.string()), np.array(problems, dtype=object)
