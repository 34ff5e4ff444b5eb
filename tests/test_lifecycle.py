"""The lifecycle's rules (tru.lifecycle), as pure functions: what is pending, what a run forgets, when a
version may replace the champion, and each request's state."""

from __future__ import annotations

from datetime import UTC, datetime

from tru.forget.requests import DeletionRequest
from tru.lifecycle import (
    RunPlan,
    VersionRecord,
    due_date,
    may_promote,
    pending_requests,
    plan_run,
    request_statuses,
)

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


def req(rid: str, when: str = "2026-11-25T00:00:00Z", user: int = 1) -> DeletionRequest:
    return DeletionRequest(rid, "user", user, None, when, "test")


def test_pending_is_manifest_minus_forgotten_in_order() -> None:
    m = [req("a"), req("b"), req("c"), req("b")]
    assert [r.request_id for r in pending_requests(m, {"b"})] == ["a", "c"]
    assert pending_requests(m, {"a", "b", "c"}) == []


def test_plan_never_forgets_less_than_the_start_model() -> None:
    m = [req("a"), req("b"), req("c")]
    plan = plan_run(m, {"a"}, start="champion", start_version="4", now=NOW)
    assert plan.pending == ("b", "c") and plan.target == ("a", "b", "c") and plan.forgotten == ("a",)
    assert plan.has_new and not plan.overdue and plan.method == ""
    # an id the champion forgot but that left the manifest (erased): not in the target, still in forgotten
    plan = plan_run([req("b")], {"a", "b"}, start="champion", now=NOW)
    assert plan.target == ("b",) and plan.forgotten == ("a", "b") and not plan.has_new and not plan.has_work
    assert RunPlan.from_dict(plan.to_dict()) == plan


def test_overdue_requests_force_a_retrain() -> None:
    old, new = req("old", "2026-10-01T00:00:00Z"), req("new", "2026-11-29T00:00:00Z")
    plan = plan_run([old, new], set(), start="trained", deadline_days=30, now=NOW)
    assert plan.overdue == ("old",) and plan.method == "retrain"
    assert due_date(old, 30).isoformat() == "2026-10-31T00:00:00+00:00"
    assert plan_run([new], set(), start="trained", deadline_days=30, now=NOW).method == ""
    # a forgotten request is never overdue, however old
    assert plan_run([old, new], {"old"}, start="champion", now=NOW).overdue == ()


def test_confirm_run_has_work_without_new_requests() -> None:
    plan = plan_run([req("a")], {"a"}, start="champion", confirm=True, now=NOW)
    assert not plan.has_new and plan.has_work
    assert not plan_run([], set(), start="champion", confirm=True, now=NOW).has_work


def test_a_promotion_never_unforgets() -> None:
    assert may_promote({"a", "b"}, {"a"}) and may_promote({"a"}, {"a"}) and may_promote({"a"}, set())
    assert not may_promote({"b"}, {"a"}) and not may_promote(set(), {"a"})


def test_request_states_with_their_evidence() -> None:
    class Erased:
        request_id, kind, requested_at, erased_at = (
            "e",
            "item",
            "2026-01-01T00:00:00Z",
            "2026-02-01T00:00:00Z",
        )

    versions = [
        VersionRecord("1", (), "certified", "nothing new to forget", frozenset(), "2026-11-01"),
        VersionRecord("2", (), "certified", "retrain comparison", frozenset({"a", "e"}), "2026-11-26"),
        VersionRecord("3", (), "rejected", "retrain comparison", frozenset(), "2026-11-27"),
        VersionRecord(
            "4", ("champion",), "certified", "retrain-free", frozenset({"a", "e", "b"}), "2026-11-28"
        ),
    ]
    manifest = [req("a"), req("b"), req("c", "2026-11-29T00:00:00Z"), req("d", "2026-09-01T00:00:00Z")]
    rows = {r.request_id: r for r in request_statuses(manifest, versions, [Erased()], now=NOW)}
    assert (
        rows["a"].state == "forgotten"
        and rows["a"].version == "2"
        and rows["a"].evidence == "retrain comparison"
    )
    assert rows["b"].state == "forgotten" and rows["b"].version == "4"
    assert rows["c"].state == "pending" and rows["d"].state == "overdue"
    assert (
        rows["e"].state == "erased" and rows["e"].version == "2" and rows["e"].erased_at.startswith("2026-02")
    )
    # no champion: nothing is forgotten, whatever older versions say
    rows = {r.request_id: r.state for r in request_statuses(manifest, versions[:3], now=NOW)}
    assert rows["a"] == "pending"
