"""The retrain policy: debounce, cooldown, one job in flight, state that survives a restart."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from raymlops.config import MonitoringConfig
from raymlops.monitoring.policy import MonitorState, decide, retrain_submission_id

RULE = MonitoringConfig(drift_share=0.5, consecutive_windows=3, cooldown_s=100)


def run(shares: list[float], *, state: MonitorState | None = None, start: float = 0.0, step: float = 1.0):  # type: ignore[no-untyped-def]
    state = state or MonitorState()
    decisions = []
    for i, share in enumerate(shares):
        state, decision = decide(state, RULE, share=share, now=start + i * step, model="churn")
        decisions.append(decision)
    return state, decisions


def test_one_drifted_window_does_not_retrain_k_in_a_row_do() -> None:
    state, decisions = run([0.6, 0.0, 0.7, 0.8, 0.9])
    assert [d.retrain for d in decisions] == [False, False, False, False, True]
    assert decisions[1].reasons[-1] == "no drift: the run of drifted windows is reset"
    assert decisions[3].reasons[-1] == "drift in 2 of 3 consecutive windows needed"
    assert decisions[4].submission_id == retrain_submission_id("churn", 5)
    assert state.job_in_flight == decisions[4].submission_id
    assert state.consecutive_drift == 0, "a retrain starts a new run"
    assert [job.status for job in state.jobs] == ["PENDING"]


def test_the_share_threshold_is_inclusive_like_evidentlys() -> None:
    _, decisions = run([0.5, 0.49])
    assert decisions[0].drifted
    assert not decisions[1].drifted


def test_no_second_retrain_while_one_is_in_flight() -> None:
    state, decisions = run([0.9] * 20, step=1000.0)  # long past any cooldown
    assert sum(d.retrain for d in decisions) == 1
    assert "is still in flight" in decisions[-1].reasons[-1]


def test_cooldown_holds_after_the_job_finished() -> None:
    state, decisions = run([0.9] * 3)
    job = state.job_in_flight
    assert job is not None
    state = state.job_finished(job, "SUCCEEDED", now=5.0)
    assert state.job_in_flight is None
    assert state.alerts == ()
    state, during = run([0.9] * 3, state=state, start=10.0)
    assert not during[-1].retrain
    assert during[-1].reasons[-1].startswith("cooling down: 90s of 100s left")
    state, after = run([0.9] * 3, state=state, start=200.0)
    assert after[0].retrain, "drift that held through the cooldown retrains as soon as it ends"
    assert after[0].window == 7
    assert not any(d.retrain for d in after[1:])


def test_a_failed_job_raises_an_alert_and_frees_the_slot() -> None:
    state, _ = run([0.9] * 3)
    job = state.job_in_flight
    assert job is not None
    state = state.job_finished(job, "FAILED", now=4.0, message="exit code 1")
    assert state.job_in_flight is None
    assert state.alerts == (f"retrain job {job} FAILED: exit code 1",)
    assert state.jobs[0].status == "FAILED"
    assert state.jobs[0].finished_at == 4.0


def test_state_round_trips_through_json_as_after_a_restart() -> None:
    state, _ = run([0.9, 0.9, 0.9, 0.2, 0.8])
    state = state.job_finished(state.jobs[0].submission_id, "FAILED", now=9.0, message="boom")
    restored = MonitorState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert restored == state
    assert decide(restored, RULE, share=0.9, now=50.0) == decide(state, RULE, share=0.9, now=50.0)


def test_submission_ids_are_deterministic_and_ordered() -> None:
    assert retrain_submission_id("churn", 12) == "raymlops-retrain-churn-w000012"
    assert retrain_submission_id("churn", 12) == retrain_submission_id("churn", 12)
    assert retrain_submission_id("churn", 12, "ab12cd34") == "raymlops-retrain-churn-ab12cd34-w000012"


@settings(max_examples=200, deadline=None)
@given(
    shares=st.lists(st.floats(0, 1), max_size=60),
    gaps=st.lists(st.floats(0, 500), min_size=60, max_size=60),
)
def test_retrains_are_k_drifted_windows_apart_and_never_overlap(
    shares: list[float], gaps: list[float]
) -> None:
    state, now, retrain_windows = MonitorState(), 0.0, []
    for share, gap in zip(shares, gaps, strict=False):
        now += gap
        in_flight = state.job_in_flight
        state, decision = decide(state, RULE, share=share, now=now)
        if decision.retrain:
            assert in_flight is None
            retrain_windows.append((decision.window, now))
            state = state.job_finished(state.job_in_flight, "SUCCEEDED", now=now)  # type: ignore[arg-type]
    for (w1, t1), (w2, t2) in zip(retrain_windows, retrain_windows[1:], strict=False):
        assert w2 - w1 >= RULE.consecutive_windows
        assert t2 - t1 >= RULE.cooldown_s
