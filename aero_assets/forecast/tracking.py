"""MLflow logging of training runs, which must never be the reason a training run fails.

The model store is the system of record for models; MLflow is the place people compare runs. So
logging is best effort: an unreachable or misconfigured tracking server turns into
`TrackingResult(logged=False, warning=...)` within a few seconds (retries off, a short HTTP
timeout for the call), never an exception and never a training run hanging on MLflow's default
retry schedule (minutes).

Where runs go, first match wins: the `tracking_uri` argument, `MLFLOW_TRACKING_URI` in the
environment, then a local SQLite store `$AERO_HOME/mlflow/mlflow.db` with artifacts in
`$AERO_HOME/mlflow/artifacts` (readable with `mlflow ui --backend-store-uri sqlite:///...`).
SQLite rather than the file store because MLflow deprecates the file store, and the SQLAlchemy
and Alembic it needs are already installed by Dagster.

`mlflow` is imported inside `log_training_run` only: importing it takes seconds.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
DEFAULT_TIMEOUT_S = 5.0
MAX_PARAMS_PER_BATCH = 100  # MLflow's log_batch limit


@dataclass(frozen=True)
class TrackingResult:
    """What happened to the MLflow logging of one run (for the asset's metadata and logs)."""

    logged: bool
    run_id: str | None
    uri: str
    warning: str | None = None
    experiment_id: str | None = None


def default_tracking_uri(home: Path) -> str:
    """The local store under `$AERO_HOME/mlflow/`: a SQLite database (the folder is created)."""
    folder = Path(home).absolute() / "mlflow"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def resolve_tracking_uri(tracking_uri: str | None = None, home: Path | None = None) -> str:
    """The argument, else MLFLOW_TRACKING_URI, else the local store under `home` (default $AERO_HOME or ./.aero)."""
    if tracking_uri:
        return tracking_uri
    if os.environ.get(TRACKING_URI_ENV):
        return os.environ[TRACKING_URI_ENV]
    return default_tracking_uri(Path(home) if home is not None else Path(os.environ.get("AERO_HOME", ".aero")))


def _local_artifact_location(uri: str) -> str | None:
    """For a local SQLite store, artifacts next to the database (MLflow would default to ./mlruns in the cwd)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").absolute().as_uri()
    return None


@contextmanager
def _http_limits(timeout_s: float, max_retries: int) -> Iterator[None]:
    """MLflow's HTTP retry/timeout settings for the duration of one logging call, then the previous values.

    MLflow reads them from the environment at request time; its defaults (7 retries with
    exponential backoff, 120 s timeout) would hold a training run for minutes on a dead server.
    """
    wanted = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(max_retries),
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, math.ceil(timeout_s))),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
    }
    previous = {key: os.environ.get(key) for key in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _quiet_mlflow_logging() -> None:
    """The SQLite store logs its schema migrations at INFO on first use; not worth a run log line."""
    for name in ("mlflow.store.db.utils", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _clean_metrics(metrics: Mapping[str, Any]) -> tuple[dict[str, float], list[str]]:
    """Metrics MLflow can store (finite numbers), and the names of those dropped."""
    kept: dict[str, float] = {}
    dropped: list[str] = []
    for key, value in metrics.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            dropped.append(key)
            continue
        if math.isfinite(number):
            kept[str(key)] = number
        else:
            dropped.append(key)
    return kept, dropped


def log_training_run(
    *,
    tracking_uri: str | None,
    experiment: str,
    run_name: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    tags: Mapping[str, Any],
    artifact_dir: Path | None,
    home: Path | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_retries: int = 0,
) -> TrackingResult:
    """Log one finished training run (params, metrics, tags, the files of `artifact_dir`); never raises.

    Returns logged=True with the run id, or logged=False with a warning saying the run was not
    logged and why. Non-finite or non-numeric metrics are dropped (MLflow rejects them) and named
    in the warning while the run is still logged.
    """
    uri = resolve_tracking_uri(tracking_uri, home)
    run_id: str | None = None
    experiment_id: str | None = None
    client = None
    try:
        with _http_limits(timeout_s, max_retries):
            _quiet_mlflow_logging()
            from mlflow.entities import Metric, Param, RunTag
            from mlflow.tracking import MlflowClient

            clean_metrics, dropped = _clean_metrics(metrics)
            client = MlflowClient(tracking_uri=uri)
            found = client.get_experiment_by_name(experiment)
            if found is None:
                experiment_id = client.create_experiment(experiment, artifact_location=_local_artifact_location(uri))
            else:
                experiment_id = found.experiment_id
            run = client.create_run(experiment_id, run_name=run_name, tags={str(k): str(v) for k, v in tags.items()})
            run_id = run.info.run_id
            timestamp = run.info.start_time
            param_list = [Param(str(k), str(v)) for k, v in params.items()]
            metric_list = [Metric(k, v, timestamp, 0) for k, v in clean_metrics.items()]
            for start in range(0, max(len(param_list), 1), MAX_PARAMS_PER_BATCH):
                client.log_batch(
                    run_id,
                    params=param_list[start : start + MAX_PARAMS_PER_BATCH],
                    metrics=metric_list if start == 0 else [],
                    tags=[RunTag("aero.dropped_metrics", ",".join(dropped))] if dropped and start == 0 else [],
                )
            if artifact_dir is not None:
                client.log_artifacts(run_id, str(artifact_dir))
            client.set_terminated(run_id, "FINISHED")
    except Exception as exc:  # best effort by design: report, never fail the training run
        if client is not None and run_id is not None:
            try:
                with _http_limits(timeout_s, max_retries):
                    client.set_terminated(run_id, "FAILED")
            except Exception:
                pass
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
        return TrackingResult(
            logged=False,
            run_id=run_id,
            uri=uri,
            warning=f"training run {run_name!r} was not logged to MLflow at {uri}: {reason}",
            experiment_id=experiment_id,
        )
    warning = f"metrics not logged (not finite numbers): {', '.join(dropped)}" if dropped else None
    return TrackingResult(logged=True, run_id=run_id, uri=uri, warning=warning, experiment_id=experiment_id)
