"""Arrow schemas of the propulsion test rig domain: what landing hands over, what cleaning keeps.

The landed schema is the contract with the landing code (it is fixed there): every field of a
reading is nullable because a reading may arrive half-parsed, and `problems` says why in words so
the quarantine can repeat it verbatim instead of guessing. `origin` names where a row came from
(topic/partition/offset or file:line) so a duplicate can point at the row it repeats, and `day`
is the partition the row belongs to (the event day, or the landing day when `ts` is unreadable).
"""

from __future__ import annotations

import pyarrow as pa

TS_TYPE = pa.timestamp("ns", tz="UTC")

LANDED_SCHEMA = pa.schema(
    [
        pa.field("rig_id", pa.string(), nullable=True),
        pa.field("ts", TS_TYPE, nullable=True),
        pa.field("temperature_c", pa.float64(), nullable=True),
        pa.field("pressure_hpa", pa.float64(), nullable=True),
        pa.field("uptime_h", pa.float64(), nullable=True),
        pa.field("problems", pa.string(), nullable=False),
        pa.field("origin", pa.string(), nullable=False),
        pa.field("day", pa.string(), nullable=False),
    ]
)

SIGNALS = ("temperature_c", "pressure_hpa", "uptime_h")
"""The measured fields, in the order reasons name them."""

CLEAN_SCHEMA = pa.schema(
    [
        pa.field("rig_id", pa.string(), nullable=False),
        pa.field("ts", TS_TYPE, nullable=False),
        pa.field("temperature_c", pa.float64(), nullable=False),
        pa.field("pressure_hpa", pa.float64(), nullable=False),
        pa.field("uptime_h", pa.float64(), nullable=False),
        pa.field("origin", pa.string(), nullable=False),
        pa.field("day", pa.string(), nullable=False),
    ]
)

QUARANTINE_SCHEMA = LANDED_SCHEMA.append(pa.field("reason", pa.string(), nullable=False))
