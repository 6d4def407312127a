"""The store's two ways of writing a batch of inserts, against the real FerretDB: pymongo and the wire itself.

Both must store the same documents and fail the same ones; the wire's own connection must come back
after the store is killed and restarted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from bson import Binary, ObjectId
from pymongo import AsyncMongoClient, WriteConcern
from pymongo.asynchronous.collection import AsyncCollection

from aigw_server.queue.store import (
    JOBS,
    DriverInserts,
    Duplicate,
    InsertBatcher,
    InsertSink,
    QueueStore,
    StoreUnavailable,
    WireInserts,
    wire_socket,
)
from aigw_server.queue.store_wire import WireConnection
from aigw_server.runtime.config import DatabaseConfig
from harness.ferretdb import FerretDBProcess

Doc = dict[str, object]
SinkMaker = Callable[[AsyncCollection[Doc]], InsertSink]


@pytest.fixture
async def collection(ferretdb: FerretDBProcess, db_name: str) -> AsyncIterator[AsyncCollection[Doc]]:
    client: AsyncMongoClient[Doc] = AsyncMongoClient(ferretdb.uri, directConnection=True)
    coll = client.get_database(db_name, write_concern=WriteConcern(w=1, j=True)).get_collection(JOBS)
    await coll.create_index("idem", unique=True, sparse=True)
    yield coll
    await client.close()


def sinks(ferretdb: FerretDBProcess) -> dict[str, SinkMaker]:
    path = wire_socket(ferretdb.uri)
    assert path is not None
    return {
        "driver": DriverInserts,
        "wire": lambda coll: WireInserts(coll, WireConnection(path, connect_timeout=2.0, reply_timeout=5.0)),
    }


@pytest.fixture(params=["driver", "wire"])
def make_sink(request: pytest.FixtureRequest, ferretdb: FerretDBProcess) -> SinkMaker:
    return sinks(ferretdb)[request.param]


def job(i: int, **extra: object) -> Doc:
    return {
        "_id": f"job-{i}",
        "model": "m",
        "seq": i,
        "submitted_at": dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC),
        "payload": os.urandom(64),  # stored as BSON binary, read back as bytes
        "grant": {"lease_id": f"l{i}", "at": dt.datetime(2026, 1, 2, tzinfo=dt.UTC)},
        **extra,
    }


async def test_a_batch_is_stored_as_written(collection: AsyncCollection[Doc], make_sink: SinkMaker) -> None:
    sink = make_sink(collection)
    docs = [job(i) for i in range(5)]
    try:
        assert await sink.write([dict(d) for d in docs]) == {}
    finally:
        sink.close()
    stored = await collection.find({}, sort=[("seq", 1)]).to_list(None)
    for doc in docs:
        doc["submitted_at"] = doc["submitted_at"].replace(tzinfo=None)  # type: ignore[attr-defined]  # read back naive UTC
        doc["grant"]["at"] = doc["grant"]["at"].replace(tzinfo=None)  # type: ignore[index]  # the same, nested
    assert stored == docs


async def test_duplicates_fail_alone_and_the_rest_is_stored(collection: AsyncCollection[Doc], make_sink: SinkMaker) -> None:
    await collection.insert_one(job(1, idem="scope/k"))
    sink = make_sink(collection)
    try:
        failures = await sink.write([job(0), job(1), job(2), job(2), job(3, idem="scope/k"), job(4)])
    finally:
        sink.close()
    assert sorted(failures) == [1, 3, 4]
    assert all(isinstance(f, Duplicate) for f in failures.values())
    assert sorted(d["_id"] for d in await collection.find({}).to_list(None)) == ["job-0", "job-1", "job-2", "job-4"]  # type: ignore[type-var]


async def test_a_document_without_an_id_gets_an_object_id(collection: AsyncCollection[Doc], make_sink: SinkMaker) -> None:
    doc: Doc = {"rid": "r", "t": "g"}
    sink = make_sink(collection)
    try:
        assert await sink.write([doc]) == {}
    finally:
        sink.close()
    assert isinstance(doc["_id"], ObjectId)
    assert await collection.find_one({"_id": doc["_id"]}) == doc


async def test_a_document_over_the_size_limit_is_refused_and_its_batch_stored(
    collection: AsyncCollection[Doc], ferretdb: FerretDBProcess
) -> None:
    sink = sinks(ferretdb)["wire"](collection)
    try:
        failures = await sink.write([job(0), job(1, result=Binary(b"x" * (17 * 1024 * 1024))), job(2)])
    finally:
        sink.close()
    assert list(failures) == [1]
    assert isinstance(failures[1], StoreUnavailable)
    assert not failures[1].uncertain
    assert sorted(d["_id"] for d in await collection.find({}, {"_id": 1}).to_list(None)) == ["job-0", "job-2"]  # type: ignore[type-var]


async def test_the_driver_reports_a_document_over_the_size_limit_instead_of_failing_the_batcher(
    collection: AsyncCollection[Doc],
) -> None:
    batcher = InsertBatcher(DriverInserts(collection))
    try:
        with pytest.raises(StoreUnavailable):
            await batcher.insert(job(1, result=Binary(b"x" * (17 * 1024 * 1024))))
        await batcher.insert(job(2))  # the batcher still works
    finally:
        await batcher.close()
    assert await collection.count_documents({}) == 1


async def test_the_embedded_store_writes_its_hot_inserts_on_the_wire(
    ferretdb: FerretDBProcess, db_name: str, tmp_path: Path
) -> None:
    store = QueueStore(DatabaseConfig(uri=ferretdb.uri, name=db_name), tmp_path, 86_400.0)
    other = QueueStore(DatabaseConfig(uri=ferretdb.uri + "?appname=x", name=db_name), tmp_path, 86_400.0)
    try:
        await store.connect()
        await other.connect()
        assert store.wire_inserts
        assert not other.wire_inserts
        await store.insert(JOBS, job(1))
        assert await store.find_one(JOBS, {"_id": "job-1"}) is not None
    finally:
        await store.close()
        await other.close()


def test_only_a_local_socket_without_credentials_or_options_goes_on_the_wire() -> None:
    assert wire_socket("mongodb://%2Ftmp%2Faigw%2Fferretdb.sock/") == "/tmp/aigw/ferretdb.sock"
    for uri in (
        "mongodb://localhost:27017/",
        "mongodb://%2Ftmp%2Fa.sock,%2Ftmp%2Fb.sock/",
        "mongodb://user:secret@%2Ftmp%2Fa.sock/",
        "mongodb://%2Ftmp%2Fa.sock/?tls=true",
        "mongodb://%2Ftmp%2Fa.sock/?replicaSet=rs0",
        "mongodb+srv://cluster.example.com/",
        "not a uri",
    ):
        assert wire_socket(uri) is None, uri


async def test_the_wire_reconnects_after_the_store_is_killed_and_restarted(ferretdb_binary: Path, tmp_path: Path) -> None:
    store = FerretDBProcess(ferretdb_binary, tmp_path / "db")
    store.start()
    client: AsyncMongoClient[Doc] = AsyncMongoClient(store.uri, directConnection=True, serverSelectionTimeoutMS=2000)
    path = wire_socket(store.uri)
    assert path is not None
    connection = WireConnection(path, connect_timeout=4.0, reply_timeout=5.0)
    batcher = InsertBatcher(WireInserts(client["t"]["jobs"], connection))
    try:
        await batcher.insert(job(1))
        store.kill()
        await asyncio.sleep(0.2)  # the connection's end is seen (a write racing it would be in doubt)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as refused:
            await batcher.insert(job(2))
        assert not refused.value.uncertain  # nothing reached a store
        assert time.monotonic() - started < 6.0

        # A store that comes back within the connect timeout is waited for.
        def restart_soon() -> None:
            time.sleep(0.3)
            store.start()

        restart = asyncio.get_running_loop().run_in_executor(None, restart_soon)
        await batcher.insert(job(3))
        await restart
        assert sorted(d["_id"] for d in await client["t"]["jobs"].find({}).to_list(None)) == ["job-1", "job-3"]  # type: ignore[type-var]
    finally:
        await batcher.close()
        await client.close()
        store.stop()
