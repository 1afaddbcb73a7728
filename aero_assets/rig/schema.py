import pyarrow as pa

LANDED_SCHEMA = pa.schema([("rig_id", pa.string()), ("ts", pa.timestamp("ns", tz="UTC")), ("temperature_c", pa.float64()),
                           ("pressure_hpa", pa.float64()), ("uptime_h", pa.float64()), ("problems", pa.string()),
                           ("origin", pa.string()), ("day", pa.string())])
