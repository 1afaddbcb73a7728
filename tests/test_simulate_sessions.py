"""`aero simulate` continues a session's run numbering instead of reusing its run ids."""

import pytest

from aero_assets.simulators.publish import next_run_index, session_run_ids
from aero_assets.stack import simulate_windtunnel

pytestmark = pytest.mark.broker


def test_simulating_a_session_twice_continues_its_numbering_and_keeps_its_baseline(settings, kafka):
    first = simulate_windtunnel(settings, runs=2, duration_s=0.05, session_id="s9", seed=1, kafka=kafka,
                                progress=False)
    again = simulate_windtunnel(settings, runs=1, duration_s=0.05, session_id="s9", seed=2, kafka=kafka,
                                progress=False)
    other = simulate_windtunnel(settings, runs=1, duration_s=0.05, session_id="s10", seed=3, kafka=kafka,
                                progress=False)
    assert first == ["s9-run001", "s9-run002"]
    assert again == ["s9-run003"], "a second invocation must not publish s9-run001 again"
    assert other == ["s10-run001"], "another session starts at 1 (s9's ids are not s10's)"
    assert session_run_ids(kafka, settings.topics.windtunnel_runs, "s9") == ["s9-run001", "s9-run002", "s9-run003"]


def test_next_run_index_ignores_ids_of_other_shapes():
    assert next_run_index(["s1-run001", "s1-run007", "s1-runX", "s11-run099", "other"], "s1") == 8
    assert next_run_index([], "s1") == 1
