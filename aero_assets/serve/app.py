"""The read API (FastAPI): every domain's results for dashboards, notebooks and other services.

Read-only by construction: the lake is read as Parquet files, models from the model store, Kafka
only by consumer groups of its own that commit nothing, so a request never holds a lock a landing
or an asset needs. Identifiers and filters are validated as everywhere else (`aero_assets.ids`):
a bad one is a 400 that says what is allowed, a missing thing a 404; no request text reaches a
path or a query unvalidated. With `AERO_API_TOKEN` set, every data endpoint and /metrics want it as a
bearer token; public are /healthz, the explorer shell (/explorer, /static: no data, it asks the
API with the token from its URL fragment) and the docs (/docs, /openapi.json: the schema only).
"""

import hmac
import io
import json
import logging
import os
import threading
import time
import uuid
import weakref
from datetime import datetime
from pathlib import Path
from typing import Annotated

import anyio
import pyarrow as pa
import pyarrow.csv as pacsv
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from aero_assets.ids import InvalidIdentifier, validate_id
from aero_assets.serve import lake_reader as lr
from resources.settings import Settings

log = logging.getLogger(__name__)
MAX_PAGE = 1000
MAX_LIVE_STREAMS = 8  # open SSE clients; each holds a broker consumer and a thread
DAY = r"^\d{4}-\d{2}-\d{2}$"


def _rows(table: pa.Table | None, limit: int, offset: int) -> dict:
    if table is None or table.num_rows == 0:
        return {"total": 0, "offset": offset, "items": []}
    page = table.slice(offset, limit)
    return {"total": table.num_rows, "offset": offset, "items": json.loads(_json_table(page))}


def _json_table(table: pa.Table) -> str:
    """Rows as JSON with timestamps as ISO strings (pyarrow -> pandas -> JSON keeps them exact to the µs)."""
    frame = table.to_pandas()
    for name, dtype in frame.dtypes.items():
        if str(dtype).startswith("datetime64"):
            frame[name] = frame[name].map(lambda t: t.isoformat() if t is not None and t == t else None)
    return frame.to_json(orient="records", date_format="iso")


class PredictRequest(BaseModel):
    station: str = Field(description="station id, as on weather.observations")


def create_app(settings: Settings) -> FastAPI:
    from aero_assets.serve.metrics import ApiMetrics

    lake = settings.lake_dir
    exports = settings.home / "exports"
    token = os.environ.get("AERO_API_TOKEN") or None
    metrics = ApiMetrics(settings)
    models: dict[tuple[str, str], object] = {}
    models_lock = threading.Lock()

    def authorized(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        if not (given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), token.encode())):
            raise HTTPException(401, "missing or wrong bearer token (AERO_API_TOKEN is set)",
                                headers={"WWW-Authenticate": "Bearer"})

    auth = [Depends(authorized)]
    max_live = MAX_LIVE_STREAMS
    live_slots = threading.BoundedSemaphore(max_live)
    live_limiter = anyio.CapacityLimiter(max_live)
    app = FastAPI(title="Aero read API", version="1",
                  description="Wind-tunnel runs, tire fleet windows and alerts, F1 laps, rig KPIs and anomalies, "
                              "forecasts: read-only over Aero's lake.")

    @app.exception_handler(InvalidIdentifier)
    async def _bad_id(_request, exc: InvalidIdentifier):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(lr.NotFound)
    async def _missing(_request, exc: lr.NotFound):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(pa.ArrowInvalid)
    async def _damaged(_request, exc: pa.ArrowInvalid):
        # a damaged lake file (truncated, not Parquet): the operator's problem, named in the log, not the body
        log.error("a lake file could not be read: %s", exc)
        return JSONResponse({"detail": "a lake file this answer needs could not be read (damaged?); "
                                       "see the server log"}, status_code=503)

    @app.middleware("http")
    async def _count(request: Request, call_next):
        t0 = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        metrics.observe(getattr(route, "path", "unmatched"), response.status_code, time.perf_counter() - t0)
        return response

    app.mount("/static", StaticFiles(directory=static_dir()), name="static")

    @app.get("/", include_in_schema=False)
    def root():
        return RedirectResponse("/explorer")

    @app.get("/explorer", tags=["explorer"], response_class=HTMLResponse)
    def explorer():
        """The interactive explorer (charts by the vendored uPlot; nothing loaded from the internet)."""
        return FileResponse(static_dir() / "explorer.html", media_type="text/html")

    # -- health and metrics ----------------------------------------------------------------------------------

    @app.get("/healthz", tags=["operations"])
    def healthz():
        """Broker, instance storage and lake; 503 when the lake cannot be read (the API has nothing to serve)."""
        checks = metrics.health()
        ok = checks["lake"]["status"] == "ok"
        return JSONResponse({"status": "ok" if ok else "degraded", "checks": checks}, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["operations"], dependencies=auth)
    def prometheus_metrics():
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    # -- wind tunnel -----------------------------------------------------------------------------------------

    @app.get("/windtunnel/runs", tags=["windtunnel"], dependencies=auth)
    def runs(status: Annotated[str | None, Query(pattern="^(pass|warn|fail|unchecked)$")] = None,
             limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100, offset: Annotated[int, Query(ge=0)] = 0):
        items = [r for r in lr.windtunnel_runs(lake, exports) if status is None or r["qc_status"] == status]
        return {"total": len(items), "offset": offset, "items": items[offset:offset + limit]}

    @app.get("/windtunnel/runs/{run_id}", tags=["windtunnel"], dependencies=auth)
    def run(run_id: str):
        return lr.windtunnel_run(lake, exports, run_id)

    @app.get("/windtunnel/runs/{run_id}/comparison", tags=["windtunnel"], dependencies=auth)
    def comparison(run_id: str):
        return {"run_id": run_id, "metrics": lr.windtunnel_comparison(lake, run_id)}

    @app.get("/windtunnel/runs/{run_id}/export", tags=["windtunnel"], dependencies=auth)
    def export(run_id: str):
        """The released processed CSV (only runs that passed QC are released)."""
        path = lr.windtunnel_export(exports, lake, run_id)
        return FileResponse(path, media_type="text/csv", filename=f"{run_id}-processed.csv")

    @app.get("/windtunnel/runs/{run_id}/series", tags=["windtunnel"], dependencies=auth)
    def series(run_id: str, channels: Annotated[str, Query(max_length=2000)] = "",
               start: Annotated[float | None, Query(alias="from", ge=0)] = None,
               end: Annotated[float | None, Query(alias="to", ge=0)] = None,
               max_points: Annotated[int, Query(ge=10, le=20_000)] = 2000, processed: bool = False):
        """Channels of a run over [from, to] seconds, each min/max-downsampled to max_points (spikes survive)."""
        names = [c for c in channels.split(",") if c]
        if len(names) > 72:
            raise HTTPException(400, "at most 72 channels per request")
        # plain lists of finite floats, serialised once per (file version, question): see windtunnel_series_json
        body = lr.windtunnel_series_json(lake, run_id, names, start, end, max_points, processed=processed)
        return Response(body, media_type="application/json")

    # -- tires -----------------------------------------------------------------------------------------------

    @app.get("/tires/alerts", tags=["tires"], dependencies=auth)
    def alerts(vehicle: str | None = None, start: Annotated[datetime | None, Query(alias="from")] = None,
               end: Annotated[datetime | None, Query(alias="to")] = None, open: bool = False,
               limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100, offset: Annotated[int, Query(ge=0)] = 0):
        start, end = _utc(start), _utc(end)
        key = ("alerts", lr.alert_versions(lake, end), vehicle, start, end, open, limit, offset)
        body = lr.responses.get_or_make(key, lambda: json.dumps(
            _rows(lr.tire_alerts(lake, vehicle, start, end, open), limit, offset)).encode())
        return Response(body, media_type="application/json")

    @app.get("/tires/windows", tags=["tires"], dependencies=auth)
    def windows(vehicle: str | None = None, start: Annotated[datetime | None, Query(alias="from")] = None,
                end: Annotated[datetime | None, Query(alias="to")] = None,
                limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100, offset: Annotated[int, Query(ge=0)] = 0):
        return _rows(lr.tire_windows(lake, vehicle, _utc(start), _utc(end)), limit, offset)

    @app.get("/tires/fleet", tags=["tires"], dependencies=auth)
    def fleet(start: Annotated[datetime | None, Query(alias="from")] = None,
              end: Annotated[datetime | None, Query(alias="to")] = None,
              limit: Annotated[int, Query(ge=1, le=10_000)] = 1440, offset: Annotated[int, Query(ge=0)] = 0):
        """Fleet status per minute: active vehicles, readings and open alerts of each kind."""
        return _rows(lr.fleet_status(lake, _utc(start), _utc(end)), limit, offset)

    @app.get("/tires/alerts/live", tags=["tires"], dependencies=auth)
    async def live_alerts(seconds: Annotated[float, Query(gt=0, le=3600)] = 300):
        """Server-sent events from `tires.alerts` as they are published (own consumer group, nothing committed).

        At most MAX_LIVE_STREAMS at once (a 503 beyond), each polled on threads of its own: open streams
        never take the threads every other endpoint is served on.
        """
        if not live_slots.acquire(blocking=False):
            raise HTTPException(503, f"at most {max_live} live streams at once; try again later",
                                headers={"Retry-After": "10"})
        release = _once(live_slots.release)
        stream = _in_threads(_alert_events(settings, seconds), live_limiter, release)
        weakref.finalize(stream, release)  # a stream dropped before its first chunk still gives its slot back
        return StreamingResponse(stream, media_type="text/event-stream")

    # -- F1, rig ---------------------------------------------------------------------------------------------

    @app.get("/f1/sessions", tags=["f1"], dependencies=auth)
    def sessions():
        return {"items": lr.f1_sessions(lake)}

    @app.get("/f1/sessions/{session_id}/laps", tags=["f1"], dependencies=auth)
    def laps(session_id: str):
        return {"session_id": session_id, "laps": json.loads(_json_table(pa.Table.from_pylist(
            lr.f1_laps(lake, session_id))))}

    @app.get("/f1/sessions/{session_id}/laps/{lap}/trace", tags=["f1"], dependencies=auth)
    def lap_trace(session_id: str, lap: Annotated[int, PathParam(ge=0, le=10_000)],
                  max_points: Annotated[int, Query(ge=10, le=20_000)] = 2000):
        """One lap's speed against distance, with the time into the lap at each point (for delta time)."""
        return lr.f1_lap_trace(lake, settings.topics.f1_telemetry, session_id, lap, max_points)

    @app.get("/rig/kpis", tags=["rig"], dependencies=auth)
    def kpis(start: Annotated[str | None, Query(alias="from", pattern=DAY)] = None,
             end: Annotated[str | None, Query(alias="to", pattern=DAY)] = None, rig: str | None = None,
             format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
             limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100, offset: Annotated[int, Query(ge=0)] = 0):
        table = lr.rig_kpis(lake, start, end, rig)
        return _csv(table, "rig-kpis.csv") if format == "csv" else _rows(table, limit, offset)

    @app.get("/rig/anomalies", tags=["rig"], dependencies=auth)
    def anomalies(start: Annotated[str | None, Query(alias="from", pattern=DAY)] = None,
                  end: Annotated[str | None, Query(alias="to", pattern=DAY)] = None, rig: str | None = None,
                  format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
                  limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100, offset: Annotated[int, Query(ge=0)] = 0):
        table = lr.rig_anomalies(lake, start, end, rig)
        return _csv(table, "rig-anomalies.csv") if format == "csv" else _rows(table, limit, offset)

    # -- forecast --------------------------------------------------------------------------------------------

    @app.get("/forecast/stations", tags=["forecast"], dependencies=auth)
    def stations():
        from aero_assets.forecast.assets import released_champion
        from resources import LakeResource

        res = LakeResource(root=str(lake))
        return {"items": [{"station": s, "champion": released_champion(res, s)} for s in lr.forecast_stations(lake)]}

    @app.get("/forecast/{station}/evaluation", tags=["forecast"], dependencies=auth)
    def evaluation(station: str):
        return _finite(lr.forecast_evaluation(lake, station))

    @app.get("/forecast/{station}/predictions", tags=["forecast"], dependencies=auth)
    def predictions(station: str, limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
                    offset: Annotated[int, Query(ge=0)] = 0):
        """The champion's one-hour-ahead forecasts since its release, with the actuals (forecast vs actual)."""
        validate_id(station, "station")
        path = lake / "forecast" / "predictions" / f"station={station}" / "predictions.parquet"
        if not path.is_file():
            raise lr.NotFound(f"no predictions for station {station!r} yet")
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        i = table.schema.get_field_index("target_ts")
        table = table.set_column(i, "target_ts", table["target_ts"].cast(pa.timestamp("ns", tz="UTC")))
        return _finite(_rows(table, limit, offset))

    @app.post("/forecast/predict", tags=["forecast"], dependencies=auth)
    def predict(body: PredictRequest):
        """The next horizon from the station's champion in service (a new release is picked up at once)."""
        from aero_assets.forecast.assets import load_model, released_champion
        from aero_assets.forecast.champion import next_horizon
        from aero_assets.forecast.monitoring_assets import station_hourly
        from resources import LakeResource, ModelStoreResource

        station = validate_id(body.station, "station")
        res = LakeResource(root=str(lake))
        champion = released_champion(res, station)
        if champion is None:
            raise lr.NotFound(f"station {station!r} has no champion in service yet")
        key = (station, str(champion["version"]))
        with models_lock:
            if key not in models:
                store = ModelStoreResource(root=str(settings.models_dir))
                try:
                    models[key] = load_model(store, champion["kind"], station, version=champion["version"])
                except LookupError as exc:
                    raise lr.NotFound(f"the champion of {station} cannot be loaded: {exc}") from None
            loaded = models[key]
        lookback, horizon = int(loaded.metadata.get("lookback", 24)), int(loaded.metadata.get("horizon", 1))
        frame = next_horizon(loaded.value.predict, station_hourly(res, station), lookback, horizon)
        return {"station": station, "model": champion["kind"], "version": loaded.version,
                "forecasts": [{"target_ts": _iso_ns(t), "forecast_c": float(f)}
                              for t, f in zip(frame["target_ts"], frame["forecast"], strict=True)]}

    return app


def _finite(obj):
    """JSON has no NaN or infinity: they become null (a model that could not be scored says so as null)."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


# the lake's timestamps are ns since the epoch: a bound outside what they can hold is a 400, not an overflow
EARLIEST, LATEST = "1678-01-01T00:00:00+00:00", "2261-12-31T23:59:59+00:00"


def _utc(when: datetime | None) -> datetime | None:
    from datetime import UTC

    if when is None:
        return None
    try:
        when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except OverflowError:
        when = None
    if when is None or not datetime.fromisoformat(EARLIEST) <= when <= datetime.fromisoformat(LATEST):
        raise HTTPException(400, f"from/to must lie between {EARLIEST} and {LATEST}")
    return when


def _iso_ns(ts: int) -> str:
    from datetime import UTC

    return datetime.fromtimestamp(int(ts) / 1e9, tz=UTC).isoformat()


def _csv(table: pa.Table | None, filename: str) -> Response:
    buf = io.BytesIO()
    if table is not None and table.num_rows:
        pacsv.write_csv(table, buf)
    return Response(buf.getvalue(), media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _once(fn):
    lock, done = threading.Lock(), []

    def call():
        with lock:
            if done:
                return
            done.append(True)
        fn()
    return call


_DONE = object()


async def _in_threads(gen, limiter: anyio.CapacityLimiter, release):
    """A blocking generator's chunks, each computed on a thread of `limiter`; closed and released at the end."""
    try:
        while True:
            chunk = await anyio.to_thread.run_sync(next, gen, _DONE, limiter=limiter)
            if chunk is _DONE:
                return
            yield chunk
    finally:
        try:
            gen.close()
        finally:
            release()


def _alert_events(settings: Settings, seconds: float):
    from confluent_kafka import OFFSET_END, KafkaException, TopicPartition

    from resources.kafka import BrokerUnavailable, KafkaResource

    kafka = KafkaResource.from_settings(settings.kafka)
    topic = settings.topics.tires_alerts
    try:
        identity = kafka.identity(topic, timeout=5)
    except (BrokerUnavailable, KafkaException):
        yield f"event: error\ndata: {json.dumps({'detail': 'the Kafka broker is unavailable'})}\n\n"
        return
    if identity is None:
        yield f"event: error\ndata: {json.dumps({'detail': f'topic {topic} does not exist'})}\n\n"
        return
    # assigned, not subscribed: no group join to wait for, nothing committed; every partition from its end
    consumer = kafka.consumer(f"aero-api-live-{uuid.uuid4().hex[:8]}", **{"enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in identity.partitions])
    deadline = time.monotonic() + seconds
    quiet_since = time.monotonic()
    try:
        yield ": connected\n\n"
        while time.monotonic() < deadline:
            try:
                batch = consumer.consume(num_messages=500, timeout=1.0)
            except KafkaException:
                yield f"event: error\ndata: {json.dumps({'detail': 'the Kafka broker was lost'})}\n\n"
                return
            for msg in batch:
                if msg.error() is None and msg.value() is not None:
                    yield f"event: alert\ndata: {msg.value().decode(errors='replace')}\n\n"
                    quiet_since = time.monotonic()
            if time.monotonic() - quiet_since > 15:
                yield ": keep-alive\n\n"
                quiet_since = time.monotonic()
    finally:
        consumer.close()


def serve(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(create_app(settings), host=host, port=port, log_level="info", access_log=False)


def static_dir() -> Path:
    return Path(__file__).with_name("static")
