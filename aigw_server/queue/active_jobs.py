"""The in-memory index of jobs: unfinished ones by id and idempotency key, each model's queue and running slots,
finished ones kept at hand, ended leases, and the attempt events waiting to be deleted."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator

from aigw_server.queue.jobs import JobRecord, Priority, State
from aigw_server.queue.ordering import ModelQueue
from aigw_server.queue.store_documents import idem_scope

RECENT_JOBS = 2000
RECENT_RESULT_BYTES = 64 * 1024
ENDED_LEASES = 20_000


class ActiveJobs:
    """Where every job stands in memory; changed only by the engine, after its write is acknowledged."""

    def __init__(self, models: Iterable[str], ageing_seconds: float) -> None:
        self.ageing_seconds = ageing_seconds
        self._queues = {name: ModelQueue() for name in models}
        self._active: dict[str, JobRecord] = {}
        self._recent: OrderedDict[str, JobRecord] = OrderedDict()
        self._idem: dict[tuple[str, str], str] = {}
        self._ended_leases: OrderedDict[str, str] = OrderedDict()
        self._with_events: set[str] = set()
        self._events_to_delete: list[str] = []
        self._doubtful_submits: set[str] = set()
        self._seq = time.time_ns()

    # ---- models and their queues

    def models(self) -> list[str]:
        """The configured models."""
        return list(self._queues)

    def has_model(self, model: str) -> bool:
        return model in self._queues

    def queued(self, model: str) -> int:
        return len(self._queues[model])

    def running(self, model: str) -> int:
        return len(self._queues[model].running)

    def running_jobs(self, model: str) -> list[JobRecord]:
        """The jobs holding the model's running slots."""
        return [rec for rid in self._queues[model].running if (rec := self._active.get(rid)) is not None]

    def grant_order(self, model: str, now: float) -> Iterator[JobRecord]:
        """The model's queued jobs, first granted first (the queue must not change meanwhile)."""
        return self._queues[model].iter_grant_order(now, self.ageing_seconds)

    def positions(self, model: str, now: float) -> dict[str, int]:
        """1-based places of the model's queued jobs in grant order."""
        return self._queues[model].positions(now, self.ageing_seconds)

    def position(self, rec: JobRecord, now: float) -> int:
        """1-based place in grant order while queued; 0 otherwise."""
        if rec.state != State.QUEUED or rec.request_id not in self._queues[rec.model]:
            return 0
        return self.positions(rec.model, now).get(rec.request_id, 0)

    def ahead_of_new(self, model: str, priority: Priority, now: float) -> int:
        """How many queued jobs would be granted before a job submitted now with `priority`."""
        return self._queues[model].ahead_of_new(priority, now, self.ageing_seconds)

    def enqueue(self, rec: JobRecord) -> None:
        """Puts the job at its place among the model's queued jobs (a requeued job keeps its place)."""
        mq = self._queues[rec.model]
        mq.running.discard(rec.request_id)
        mq.push(rec)

    def occupy(self, rec: JobRecord) -> None:
        """The job holds one of the model's running slots (granted, or reserved for its taker)."""
        mq = self._queues[rec.model]
        mq.remove(rec)
        mq.running.add(rec.request_id)

    def place(self, rec: JobRecord) -> None:
        """Puts a job whose state was just rebuilt where that state says: a running slot, or the queue."""
        if rec.state == State.RUNNING and rec.lease is not None:
            self.occupy(rec)
        else:
            self._queues[rec.model].remove(rec)
            self.enqueue(rec)

    def _leave_queue(self, rec: JobRecord) -> None:
        mq = self._queues[rec.model]
        mq.remove(rec)
        mq.running.discard(rec.request_id)

    # ---- jobs by id and idempotency key

    def get(self, request_id: str) -> JobRecord | None:
        """The unfinished job with this id, if any."""
        return self._active.get(request_id)

    def at_hand(self, request_id: str) -> JobRecord | None:
        """The job from memory: unfinished, or finished recently enough to be kept."""
        return self._active.get(request_id) or self._recent.get(request_id)

    def unfinished(self) -> list[JobRecord]:
        """Every unfinished job."""
        return list(self._active.values())

    def id_taken(self, request_id: str) -> bool:
        """Whether a new job may not take this id: it is in use, or a submission of it may have been stored."""
        return request_id in self._active or request_id in self._recent or request_id in self._doubtful_submits

    def by_idempotency_key(self, scope: str, key: str) -> JobRecord | None:
        request_id = self._idem.get((scope, key))
        return self.at_hand(request_id) if request_id is not None else None

    def add(self, rec: JobRecord) -> None:
        """Indexes an unfinished job (not yet placed in its model's queue)."""
        self._active[rec.request_id] = rec
        if rec.idempotency_key:
            self._idem[(idem_scope(rec), rec.idempotency_key)] = rec.request_id

    def remove(self, rec: JobRecord) -> None:
        """Undoes `add` and any placement: the job's admission did not happen."""
        self._active.pop(rec.request_id, None)
        if rec.idempotency_key:
            self._idem.pop((idem_scope(rec), rec.idempotency_key), None)
        self._leave_queue(rec)

    def finished(self, rec: JobRecord) -> None:
        """The job ended: out of its queue, kept at hand for polls and repeated calls, its events to be deleted."""
        self._leave_queue(rec)
        self._active.pop(rec.request_id, None)
        self._remember(rec)
        if rec.request_id in self._with_events:
            self._with_events.discard(rec.request_id)
            self._events_to_delete.append(rec.request_id)

    def _remember(self, rec: JobRecord) -> None:
        """Keeps a finished job at hand (without its payload; large results are reread)."""
        rec.payload = b""
        if len(rec.result) > RECENT_RESULT_BYTES:
            self._forget_key(rec)
            return
        self._recent[rec.request_id] = rec
        while len(self._recent) > RECENT_JOBS:
            self._forget_key(self._recent.popitem(last=False)[1])

    def _forget_key(self, rec: JobRecord) -> None:
        if rec.idempotency_key and self._idem.get((idem_scope(rec), rec.idempotency_key)) == rec.request_id:
            del self._idem[(idem_scope(rec), rec.idempotency_key)]

    def forget_finished(self) -> None:
        """Drops every finished job kept at hand, so that reads of them go to the store (as after a restart)."""
        while self._recent:
            self._forget_key(self._recent.popitem(last=False)[1])

    # ---- admission order

    def next_seq(self) -> int:
        """The admission number of a new job."""
        self._seq += 1
        return self._seq

    def saw_seq(self, seq: int) -> None:
        """A stored job's admission number: new jobs are numbered after it."""
        self._seq = max(self._seq, seq)

    # ---- submissions whose write may have happened

    def doubt_submission(self, request_id: str) -> None:
        self._doubtful_submits.add(request_id)

    def submission_settled(self, request_id: str) -> None:
        self._doubtful_submits.discard(request_id)

    # ---- leases

    def lease_ended(self, lease_id: str, reason: str) -> None:
        """Remembers why a lease ended, for a holder that heartbeats it later."""
        self._ended_leases[lease_id] = reason
        while len(self._ended_leases) > ENDED_LEASES:
            self._ended_leases.popitem(last=False)

    def why_ended(self, lease_id: str) -> str | None:
        return self._ended_leases.get(lease_id)

    # ---- attempt events

    def has_events(self, request_id: str) -> None:
        """The job has stored attempt events (deleted once it ends)."""
        self._with_events.add(request_id)

    def delete_events_later(self, request_ids: Iterable[str]) -> None:
        """Finished jobs whose stored attempt events are still to be deleted."""
        self._events_to_delete += request_ids

    def take_events_to_delete(self) -> list[str]:
        """The finished jobs whose attempt events are due for deletion (handed over once)."""
        pending, self._events_to_delete = self._events_to_delete, []
        return pending
