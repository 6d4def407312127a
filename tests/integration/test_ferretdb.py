"""The embedded FerretDB (1.24 on SQLite): durability across restarts and crashes, and what it lacks."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import ASCENDING, DESCENDING, MongoClient, ReturnDocument, WriteConcern
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, OperationFailure, ProtocolError, PyMongoError

from harness.ferretdb import FerretDBError, FerretDBProcess, socket_path
from tests.helpers import connect_as_other_user, tcp_listeners

Doc = dict[str, Any]
NOT_IMPLEMENTED = 238  # MongoDB's NotImplemented code, which FerretDB returns for missing features


@pytest.fixture
def fdb(ferretdb_binary: Path, tmp_path: Path) -> Iterator[FerretDBProcess]:
    """A FerretDB of this test's own, so it can be stopped, killed and restarted."""
    proc = FerretDBProcess(ferretdb_binary, tmp_path / "db", log_path=tmp_path / "ferretdb.log")
    proc.start()
    yield proc
    proc.stop()


def test_it_listens_on_a_private_unix_socket_and_no_tcp_port(fdb: FerretDBProcess) -> None:
    assert fdb.pid is not None
    assert tcp_listeners(fdb.pid) == []
    assert "-listen-addr" not in " ".join(fdb.command())
    folder = fdb.socket_path.parent
    assert fdb.socket_path == socket_path(fdb.data_dir)
    assert len(os.fsencode(fdb.socket_path)) < 108
    info = folder.lstat()
    assert stat.S_ISDIR(info.st_mode)
    assert info.st_uid == os.getuid()
    assert stat.S_IMODE(info.st_mode) == 0o700
    sock = fdb.socket_path.lstat()
    assert stat.S_ISSOCK(sock.st_mode)
    assert stat.S_IMODE(sock.st_mode) == 0o600, stat.filemode(sock.st_mode)
    assert stat.S_IMODE(fdb.data_dir.stat().st_mode) & 0o077 == 0
    with _client(fdb) as c:
        assert c.admin.command("ping")["ok"] == 1
    if os.getuid() == 0:  # another local user cannot reach it (root can act as one)
        assert connect_as_other_user(fdb.socket_path).startswith("refused")


def test_a_short_data_dir_keeps_the_socket_inside_a_long_one_falls_back_to_a_private_tmp_dir(
    ferretdb_binary: Path, tmp_path: Path
) -> None:
    short = Path("/srv/aigw")
    assert socket_path(short) == short / "ferretdb-socket" / "ferretdb.sock"
    deep = tmp_path / ("d" * 120)
    fallback = socket_path(deep)
    assert len(os.fsencode(fallback)) < 108
    assert fallback.parent.name.startswith(f"aigw-{os.getuid()}-")
    assert fallback == socket_path(deep), "the launcher and the queue compute the same path"
    assert socket_path(tmp_path / ("e" * 120)) != fallback, "each data dir its own"

    proc = FerretDBProcess(ferretdb_binary, deep, log_path=tmp_path / "ferretdb.log")
    try:
        with proc:
            assert stat.S_IMODE(fallback.parent.stat().st_mode) == 0o700
            assert stat.S_IMODE(fallback.lstat().st_mode) == 0o600
            with _client(proc) as c:
                c.aigw.jobs.insert_one({"_id": "deep"})
            proc.restart(hard=True)  # a killed run's socket is replaced at the next start
            with _client(proc) as c:
                assert c.aigw.jobs.find_one({"_id": "deep"}) == {"_id": "deep"}
    finally:
        fallback.unlink(missing_ok=True)
        fallback.parent.rmdir()


def test_a_socket_dir_of_another_user_is_refused(ferretdb_binary: Path, tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to make a directory another user owns")
    proc = FerretDBProcess(ferretdb_binary, tmp_path / "db", log_path=tmp_path / "ferretdb.log", start_timeout=10)
    proc.socket_path.parent.mkdir(parents=True)
    os.chown(proc.socket_path.parent, 65534, 65534)
    with pytest.raises(FerretDBError, match="belongs to another user"):
        proc.start()


def _client(proc: FerretDBProcess) -> MongoClient[Doc]:
    return MongoClient(proc.uri, directConnection=True, serverSelectionTimeoutMS=5000)


def _race(proc: FerretDBProcess, op: Callable[[Database[Doc], int], Any], n: int = 20) -> list[Any]:
    """Run `op` from `n` threads, each with its own connection, released together; results or exceptions."""
    clients = [_client(proc) for _ in range(n)]
    for c in clients:
        c.admin.command("ping")
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = op(clients[i].race, i)
        except PyMongoError as exc:  # recorded, asserted on by the caller
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in clients:
        c.close()
    return results


def test_acknowledged_write_survives_stop_and_sigkill(fdb: FerretDBProcess) -> None:
    def jobs(c: MongoClient[Doc]) -> Collection[Doc]:
        return c.aigw.get_collection("jobs", write_concern=WriteConcern(w=1, j=True))

    with _client(fdb) as c:
        result = jobs(c).insert_one({"_id": "job-1", "state": "QUEUED", "prompt": "héllo"})
        assert result.acknowledged
        assert result.inserted_id == "job-1"

    assert fdb.stop() == 0  # SIGTERM is a clean shutdown
    fdb.start()
    with _client(fdb) as c:
        assert jobs(c).find_one({"_id": "job-1"}) == {"_id": "job-1", "state": "QUEUED", "prompt": "héllo"}
        upd = jobs(c).update_one({"_id": "job-1"}, {"$set": {"state": "RUNNING"}})
        assert (upd.matched_count, upd.modified_count) == (1, 1)
        jobs(c).insert_one({"_id": "job-2", "state": "QUEUED"})

    assert fdb.kill() == -9  # a crash: no chance to flush anything
    fdb.start()
    with _client(fdb) as c:
        docs = list(jobs(c).find({}, sort=[("_id", ASCENDING)]))
        assert docs == [
            {"_id": "job-1", "state": "RUNNING", "prompt": "héllo"},
            {"_id": "job-2", "state": "QUEUED"},
        ]

    fdb.restart(hard=True)
    with _client(fdb) as c:
        assert jobs(c).count_documents({}) == 2


def test_supported_features(fdb: FerretDBProcess) -> None:
    with _client(fdb) as c:
        db = c.aigw
        # w=1/j=true and w="majority" are accepted (single node: no replication behind them).
        for wc in (WriteConcern(w=1, j=True), WriteConcern(w="majority", j=True)):
            assert db.get_collection("wc", write_concern=wc).insert_one({}).acknowledged

        q = db.queue
        q.insert_many([{"_id": i, "state": "QUEUED", "prio": i % 3, "t": i} for i in range(6)])
        # findAndModify with sort and return_document (AFTER and BEFORE), upsert, no match.
        claimed = q.find_one_and_update(
            {"state": "QUEUED"},
            {"$set": {"state": "RUNNING"}, "$inc": {"attempt": 1}},
            sort=[("prio", DESCENDING), ("t", ASCENDING)],
            return_document=ReturnDocument.AFTER,
        )
        assert claimed == {"_id": 2, "state": "RUNNING", "prio": 2, "t": 2, "attempt": 1}
        before = q.find_one_and_update(
            {"state": "QUEUED"}, {"$set": {"state": "RUNNING"}}, sort=[("prio", DESCENDING), ("t", ASCENDING)]
        )
        assert before == {"_id": 5, "state": "QUEUED", "prio": 2, "t": 5}
        assert q.find_one_and_update({"_id": 99}, {"$set": {"state": "X"}}) is None
        upserted = q.find_one_and_update({"_id": 100}, {"$set": {"s": 1}}, upsert=True, return_document=ReturnDocument.AFTER)
        assert upserted == {"_id": 100, "s": 1}
        assert q.find_one_and_delete({"_id": 0}) == {"_id": 0, "state": "QUEUED", "prio": 0, "t": 0}
        # update_one with a state filter (compare-and-set shape) reports matched/modified counts.
        assert q.update_one({"_id": 1, "state": "QUEUED"}, {"$set": {"state": "RUNNING"}}).modified_count == 1
        assert q.update_one({"_id": 1, "state": "QUEUED"}, {"$set": {"state": "RUNNING"}}).matched_count == 0
        assert q.count_documents({"state": "RUNNING"}) == 3
        assert sorted(q.distinct("state")) == ["QUEUED", "RUNNING"]
        groups = {d["_id"]: d["n"] for d in q.aggregate([{"$group": {"_id": "$state", "n": {"$sum": 1}}}])}
        assert groups == {"QUEUED": 2, "RUNNING": 3, None: 1}

        # Unique indexes: a duplicate insert is DuplicateKeyError 11000 (single and compound).
        assert db.users.create_index("name", unique=True) == "name_1"
        db.users.insert_one({"name": "admin"})
        with pytest.raises(DuplicateKeyError) as dup:
            db.users.insert_one({"name": "admin"})
        assert dup.value.code == 11000
        db.pairs.create_index([("a", 1), ("b", 1)], unique=True)
        db.pairs.insert_one({"a": 1, "b": 1})
        with pytest.raises(DuplicateKeyError):
            db.pairs.insert_one({"a": 1, "b": 1})
        # ...but an UPDATE that breaks uniqueness is a raw SQLite error with code 1, not 11000.
        db.users.insert_one({"name": "bob"})
        with pytest.raises(OperationFailure) as upd_dup:
            db.users.update_one({"name": "bob"}, {"$set": {"name": "admin"}})
        assert not isinstance(upd_dup.value, DuplicateKeyError)
        assert upd_dup.value.code == 1
        assert "UNIQUE constraint failed" in str(upd_dup.value)
        # sparse is accepted (documents without the key do not collide).
        db.sparse.create_index("k", unique=True, sparse=True)
        db.sparse.insert_many([{"a": 1}, {"a": 2}])


def test_missing_features(fdb: FerretDBProcess) -> None:
    with _client(fdb) as c:
        db = c.aigw
        db.history.insert_one({"_id": 1, "expires_at": 0})

        # TTL indexes: rejected with NotImplemented, nothing created (so a sweeper is required).
        with pytest.raises(OperationFailure) as ttl:
            db.history.create_index("expires_at", expireAfterSeconds=60)
        assert ttl.value.code == NOT_IMPLEMENTED
        assert "expireAfterSeconds" in str(ttl.value)
        assert list(db.history.index_information()) == ["_id_"]

        # Partial indexes: NotImplemented.
        with pytest.raises(OperationFailure) as partial:
            db.history.create_index("x", unique=True, partialFilterExpression={"x": {"$exists": True}})
        assert partial.value.code == NOT_IMPLEMENTED

        # Projection in findAndModify: NotImplemented.
        with pytest.raises(OperationFailure) as proj:
            db.history.find_one_and_update({"_id": 1}, {"$set": {"y": 1}}, projection={"y": 1})
        assert proj.value.code == NOT_IMPLEMENTED

        # Transactions: the driver's startTransaction field is rejected (FailedToParse), nothing written.
        with c.start_session() as session, pytest.raises(OperationFailure) as txn:
            session.with_transaction(lambda s: db.history.insert_one({"_id": 2}, session=s))
        assert txn.value.code == 9
        assert "startTransaction" in str(txn.value)
        assert db.history.count_documents({"_id": 2}) == 0

        # Change streams: NotImplemented.
        with pytest.raises(OperationFailure) as watch:
            db.history.watch()
        assert watch.value.code == NOT_IMPLEMENTED


def _race_round(fdb: FerretDBProcess, db: Database[Doc], r: int) -> tuple[int, int, int]:
    """One round of races; returns (CAS winners, findAndModify winners, counter after 20 $inc)."""
    # Atomic: racing inserts of one _id, and of one unique key: exactly one succeeds, the others get 11000.
    res = _race(fdb, lambda d, i: d.claims.insert_one({"_id": f"c{r}", "owner": i}).inserted_id)
    assert res.count(f"c{r}") == 1
    assert all(isinstance(x, DuplicateKeyError) and x.code == 11000 for x in res if x != f"c{r}")
    res = _race(fdb, lambda d, i: d.claims.insert_one({"job": f"j{r}", "owner": i}).acknowledged)
    assert res.count(True) == 1
    assert db.claims.count_documents({"job": f"j{r}"}) == 1
    # Atomic: racing delete_one of one document: exactly one gets deleted_count == 1.
    assert sum(_race(fdb, lambda d, i: d.claims.delete_one({"_id": f"c{r}"}).deleted_count)) == 1

    # Not atomic: update_one({_id, state: QUEUED}) as compare-and-set.
    db.jobs.insert_one({"_id": f"cas{r}", "state": "QUEUED"})
    claim = {"$set": {"state": "RUNNING"}}
    res = _race(fdb, lambda d, i: d.jobs.update_one({"_id": f"cas{r}", "state": "QUEUED"}, claim).modified_count)
    cas = sum(res)
    # Not atomic: find_one_and_update claiming the one QUEUED job of a group.
    db.jobs.insert_one({"_id": f"fam{r}", "grp": r, "state": "QUEUED"})
    res = _race(fdb, lambda d, i: d.jobs.find_one_and_update({"grp": r, "state": "QUEUED"}, claim))
    fam = sum(x is not None for x in res)
    # Lost updates: 20 concurrent $inc of one counter.
    db.counters.insert_one({"_id": r, "n": 0})
    _race(fdb, lambda d, i: d.counters.update_one({"_id": r}, {"$inc": {"n": 1}}))
    counter = db.counters.find_one({"_id": r})
    assert counter is not None
    n: int = counter["n"]
    return cas, fam, n


def test_concurrency_guarantees(fdb: FerretDBProcess) -> None:
    """Only inserts (unique _id / unique index) and plain deletes are atomic across concurrent callers.

    Updates read the document, change it in FerretDB and write the whole document back by _id, so
    concurrent compare-and-set updates can all "win", findAndModify can hand one document to several
    callers, and concurrent $inc / $set on one document lose updates. Each race is retried a few times
    and must show the anomaly at least once (measured: nearly every round, even on one CPU).
    """
    with _client(fdb) as c:
        c.race.claims.create_index("job", unique=True)
        rounds: list[tuple[int, int, int]] = []
        for r in range(10):
            rounds.append(_race_round(fdb, c.race, r))
            cas, fam, inc = zip(*rounds, strict=True)
            if max(cas) > 1 and max(fam) > 1 and min(inc) < 20:
                break
        assert min(cas) >= 1, rounds
        assert max(cas) > 1, rounds  # several "winners" of one compare-and-set
        assert min(fam) >= 1, rounds
        assert max(fam) > 1, rounds  # one document handed to several findAndModify callers
        assert max(inc) <= 20, rounds
        assert min(inc) < 20, rounds  # lost $inc updates


def test_unacknowledged_write_desyncs_the_connection(fdb: FerretDBProcess) -> None:
    """FerretDB answers w=0 (moreToCome) messages, so the driver reads a stray reply next: never use w=0."""
    client: MongoClient[Doc] = MongoClient(fdb.uri, directConnection=True, maxPoolSize=1)
    with client as c:
        db = c.aigw
        assert not db.get_collection("w0", write_concern=WriteConcern(w=0)).insert_one({"_id": 1}).acknowledged
        with pytest.raises(ProtocolError, match="response id"):
            db.w0.find_one({"_id": 1})
        assert db.w0.find_one({"_id": 1}) == {"_id": 1}  # the write itself did happen
