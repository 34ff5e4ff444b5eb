"""The deletion lifecycle, in one place: from a committed request to a served model that forgot it.

Sources of truth:

* the **manifest** ``data/deletions/requests.csv`` at a data revision: every request ever made and not
  yet erased (erased ones move to the redacted ledger ``data/deletions/erased.csv``);
* the **registry**: the ``champion`` version of ``tru-<dataset>-<backbone>`` and the request ids it has
  forgotten (its checkpoint's ``forgotten`` record, mirrored in the version tag
  ``forgotten_requests_all``). Nothing else (no CI cache, no ledger of processed commits) decides
  whether a request is done.

Definitions (M = manifest ids, F = champion's forgotten ids, r.t = requested_at, D = deadline days)::

    pending   = M \\ F                              (in manifest order)
    overdue   = {r ∈ pending : now > r.t + D}
    done(r)   ⇔ r ∈ F                               (only the serving champion's record counts)
    target T  = (F ∩ M) ∪ pending                   (what the next model forgets: never less than F)
    D_r       = D \\ rows(T)                         (a second deletion never brings back the first)

A pipeline run (``tru.steps``; Kubeflow ``tru.kfp``) at a data revision: start from the champion when its
checkpoint loads on this data once the rows of its forgotten requests are removed (else train the
original on D, F = ∅); plan T; unlearn T from the start model (TRU; a full retrain when a request is
overdue); certify; register. Promotion is a compare-and-set under a registry lock
(:func:`may_promote`): a version is promoted only if it forgot a superset of what the current champion
forgot, so racing runs cannot undo each other; the losers fail clearly and their requests stay pending
for the next trigger.

Compliance fallback: when the unlearned model's certificate fails, the model that certification
retrained on D_r (a retrain is the reference, so it is certified by construction) becomes the champion,
tagged ``evidence=retrain (compliance fallback)``; no request waits on TRU succeeding.

Two speeds: the **fast path** certifies retrain-free (:mod:`tru.certify`'s proxy targets) and promotes
with ``confirmed=false``; the **slow path** (a scheduled confirm run, ``confirm=True``) trains one
retrain on D \\ rows(F) for everything forgotten since the last confirmation, certifies the champion
against it and either tags it ``confirmed=true`` or replaces it by that retrain.

Erasure (:mod:`tru.mlops.erasure`) then removes the rows of requests the champion forgot from the data,
the DVC cache and remote, the pipeline outputs and MLflow; ``tru erasure audit`` checks no trace is left.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tru.forget.requests import DeletionRequest, parse_timestamp

DEFAULT_DEADLINE_DAYS = 30.0
STATES = ("pending", "overdue", "forgotten", "erased")
METHOD_FORCED_BY_DEADLINE = "retrain"


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def due_date(request: DeletionRequest, deadline_days: float = DEFAULT_DEADLINE_DAYS) -> datetime:
    """The time by which ``request`` must be forgotten: ``requested_at + deadline_days``."""
    return _aware(parse_timestamp(request.requested_at)) + timedelta(days=float(deadline_days))


def pending_requests(manifest: Sequence[DeletionRequest], forgotten: Iterable[str]) -> list[DeletionRequest]:
    """``M \\ F`` in manifest order (repeated rows once)."""
    done, seen, out = set(forgotten), set(), []
    for req in manifest:
        if req.request_id not in done and req.request_id not in seen:
            seen.add(req.request_id)
            out.append(req)
    return out


def may_promote(new_forgotten: Iterable[str], champion_forgotten: Iterable[str]) -> bool:
    """A version may replace the champion only if it forgot everything the champion forgot."""
    return set(champion_forgotten) <= set(new_forgotten)


@dataclass(frozen=True)
class RunPlan:
    """What one pipeline run does (written by the train step as ``plan.json`` beside the start model).

    ``start``: ``champion`` (version ``start_version``) or ``trained`` (a new original on D);
    ``forgotten``: F, what the start model forgot; ``pending``: the requests this run adds; ``target``:
    T = (F ∩ M) ∪ pending; ``overdue``: pending past the deadline; ``method``: '' (the pipeline's
    method) or ``retrain`` (forced by the deadline); ``confirm``: a slow-path confirmation run."""

    start: str
    start_version: str = ""
    start_weights_sha256: str = ""
    forgotten: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()
    target: tuple[str, ...] = ()
    overdue: tuple[str, ...] = ()
    method: str = ""
    confirm: bool = False
    deadline_days: float = DEFAULT_DEADLINE_DAYS
    planned_at: str = ""

    @property
    def has_new(self) -> bool:
        return bool(self.pending)

    @property
    def has_work(self) -> bool:
        """Something to forget or to confirm."""
        return self.has_new or (self.confirm and bool(self.target))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunPlan:
        tuples = ("forgotten", "pending", "target", "overdue")
        kw = {k: (tuple(str(x) for x in raw.get(k) or ()) if k in tuples else raw[k]) for k in raw}
        return cls(**{k: v for k, v in kw.items() if k in cls.__dataclass_fields__})


def plan_run(
    manifest: Sequence[DeletionRequest],
    forgotten: Iterable[str],
    *,
    start: str,
    start_version: str = "",
    start_weights_sha256: str = "",
    deadline_days: float = DEFAULT_DEADLINE_DAYS,
    confirm: bool = False,
    now: datetime | None = None,
) -> RunPlan:
    """The plan for one run (definitions in the module docstring)."""
    now = _aware(now or datetime.now(UTC))
    forgot = set(forgotten)
    ids = [r.request_id for r in manifest]
    pending = pending_requests(manifest, forgot)
    overdue = [r.request_id for r in pending if now > due_date(r, deadline_days)]
    target = list(dict.fromkeys([i for i in ids if i in forgot] + [r.request_id for r in pending]))
    return RunPlan(
        start=start,
        start_version=start_version,
        start_weights_sha256=start_weights_sha256,
        forgotten=tuple(sorted(forgot)),
        pending=tuple(r.request_id for r in pending),
        target=tuple(target),
        overdue=tuple(overdue),
        method=METHOD_FORCED_BY_DEADLINE if overdue else "",
        confirm=bool(confirm),
        deadline_days=float(deadline_days),
        planned_at=now.isoformat(timespec="seconds"),
    )


def confirmed_by(evidence: str) -> bool:
    """Whether a certificate's evidence needs no slow-path confirmation: everything but the fast path's
    retrain-free evidence (a retrain comparison, a retrain by construction, a pass-through)."""
    return not evidence.startswith("retrain-free")


# ------------------------------------------------------------------------------------- request status
@dataclass(frozen=True)
class VersionRecord:
    """What the registry says about one version, as far as requests are concerned."""

    version: str
    aliases: tuple[str, ...]
    verdict: str
    evidence: str
    forgotten_all: frozenset[str]
    decided_at: str = ""
    confirmed: str = ""
    contains_deleted_data: bool = False


@dataclass
class RequestStatus:
    """One request's state, with its evidence."""

    request_id: str
    kind: str
    requested_at: str
    due: str
    state: str
    version: str = ""
    evidence: str = ""
    decided_at: str = ""
    confirmed: str = ""
    erased_at: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def request_statuses(
    manifest: Sequence[DeletionRequest],
    versions: Sequence[VersionRecord],
    erased: Sequence[Any] = (),
    *,
    deadline_days: float = DEFAULT_DEADLINE_DAYS,
    now: datetime | None = None,
) -> list[RequestStatus]:
    """Each request of the manifest and of the erased ledger with its state (:data:`STATES`):

    * ``forgotten``: the serving champion has forgotten it; ``version`` is the oldest certified version
      in the champion's line whose forgotten set holds it (the evidence: its certificate's evidence);
    * ``pending`` / ``overdue``: the champion has not forgotten it (overdue: past the deadline);
    * ``erased``: forgotten, and its rows have been erased from every store (the redacted ledger)."""
    now = _aware(now or datetime.now(UTC))
    champ = next((v for v in versions if "champion" in v.aliases), None)
    forgotten = champ.forgotten_all if champ else frozenset()
    certified = sorted(
        (
            v
            for v in versions
            if v.verdict == "certified" and (champ is None or int(v.version) <= int(champ.version))
        ),
        key=lambda v: int(v.version),
    )

    def first_version(rid: str) -> VersionRecord | None:
        return next((v for v in certified if rid in v.forgotten_all), None)

    out: list[RequestStatus] = []
    seen: set[str] = set()
    for req in manifest:
        if req.request_id in seen:
            continue
        seen.add(req.request_id)
        due = due_date(req, deadline_days)
        st = RequestStatus(req.request_id, req.kind, req.requested_at, due.isoformat(timespec="seconds"), "")
        if req.request_id in forgotten:
            rec = first_version(req.request_id) or champ
            st.state = "forgotten"
            if rec is not None:
                st.version, st.evidence, st.decided_at = rec.version, rec.evidence, rec.decided_at
                st.confirmed = champ.confirmed if champ else ""
        else:
            st.state = "overdue" if now > due else "pending"
        out.append(st)
    for row in erased:
        rid = str(row.request_id)
        if rid in seen:
            continue
        seen.add(rid)
        st = RequestStatus(rid, str(row.kind), str(row.requested_at), "", "erased")
        st.erased_at = str(getattr(row, "erased_at", ""))
        rec = first_version(rid)
        if rec is not None:
            st.version, st.evidence, st.decided_at = rec.version, rec.evidence, rec.decided_at
        out.append(st)
    return out
