"""Public asset keys and partition definitions (DESIGN.md asset catalog): defined once, used everywhere."""

import dagster as dg

WINDTUNNEL = "windtunnel"

windtunnel_runs = dg.DynamicPartitionsDefinition(name="windtunnel_runs")

RAW_RUN = dg.AssetKey([WINDTUNNEL, "raw_run"])
SAMPLES_TOPIC_ASSET = dg.AssetKey(["kafka", "windtunnel_samples"])
RUNS_TOPIC_ASSET = dg.AssetKey(["kafka", "windtunnel_runs"])

# One landing of a topic at a time (DESIGN.md): assets that land a topic declare this pool and
# dagster.yaml limits every pool to one slot.
WINDTUNNEL_LANDING_POOL = "landing_windtunnel"
