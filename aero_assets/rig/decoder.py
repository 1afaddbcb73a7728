"""`rig.readings` wire format: `{"rig_id", "ts", "temperature_c", "pressure_hpa", "uptime_h"}`, key = rig id.

Unlike telemetry topics, a reading with a null, an unparseable or an impossible value is landed,
not sent to the DLQ: the seed's ETL quarantines such rows, and the issue asks that every removed
row be kept in `rig.quarantine` with its reason (input rows = clean + quarantined). So this decoder
turns every value into text and hands it to the same parser as the CSV inbox (`parse.parse_raw`),
which nulls what does not parse and says why. Only a message that is no reading at all - not JSON,
not an object, too many lines, another content type - goes to the DLQ.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from aero_assets.codec import JSON, Decoded, DecodeError
from aero_assets.json_batch import json_objects
from aero_assets.rig.parse import COLUMNS, parse_raw
from aero_assets.rig.schema import LANDED_SCHEMA

MAX_LINES = 10_000


def _cell(value) -> str | None:
    """A JSON value as the text a CSV cell would hold; what is not a scalar stays recognisably wrong."""
    if value is None:
        return None
    if isinstance(value, bool):
        return f"<{str(value).lower()}>"
    if isinstance(value, int | float):
        return repr(float(value)) if isinstance(value, float) else str(value)
    if isinstance(value, str):
        return value
    return f"<{type(value).__name__}>"


class RigReadingsDecoder:
    schema = LANDED_SCHEMA
    split_column = None

    def __init__(self, clock_ns=time.time_ns):
        self._clock_ns = clock_ns

    def decode(self, value: bytes | None, key: bytes | None, content_type: str) -> Decoded:
        if content_type != JSON:
            raise DecodeError("rig readings must be JSON (content-type application/json)")
        if not value or not value.strip():
            raise DecodeError("empty message")
        objs = json_objects(value, MAX_LINES)
        raw = {c: pa.array([_cell(o.get(c)) for o in objs], pa.string()) for c in COLUMNS}
        key_text = key.decode("utf-8", "replace") if key is not None else None
        # compared as the parser will read the id (text, trimmed): 7 and "7", " rig-01 " and "rig-01" agree
        problems = [("" if key_text is None or o.get("rig_id") is None
                     or (_cell(o.get("rig_id")) or "").strip() == key_text.strip() else
                     f"rig_id {str(o.get('rig_id'))[:100]!r} differs from the message key {key_text[:100]!r}")
                    for o in objs]
        origin = pa.array([""] * len(objs), pa.string())  # filled from partition/offset when read back
        return Decoded(parse_raw(raw, origin, self._clock_ns(), np.array(problems, dtype=object)), None)
