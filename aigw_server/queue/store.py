"""MongoDB access of the queue (the only owner of the database): collections, durable writes, feature detection.

Every write is acknowledged and journaled (w=1, j=true; w=majority on a replica set). Errors come
out as two exceptions: `Duplicate` (a unique key exists: the insert did not happen) and
`StoreUnavailable` (UNAVAILABLE; `uncertain` when the write may or may not have been applied).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import bson
from bson import ObjectId
from bson.errors import InvalidDocument
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, WriteConcern
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure, PyMongoError, ServerSelectionTimeoutError
from pymongo.uri_parser import parse_uri

from aigw_server.queue.store_wire import WireConnection, WireError
from aigw_server.runtime.config import DatabaseConfig
from aigw_server.runtime.datadir import socket_path, socket_uri
from aigw_server.runtime.errors import Unavailable

log = logging.getLogger(__name__)

# BSON documents hold values of many types; pymongo types them as dict[str, Any] too.
Doc = dict[str, Any]

JOBS = "jobs"
EVENTS = "job_events"
OUTCOMES = "job_outcomes"
PAYLOADS = "job_payloads"
CRASHES = "crash_events"
CONFIG_CHANGES = "model_config_changes"
USERS = "users"
API_KEYS = "api_keys"
REFRESH_TOKENS = "refresh_tokens"
REFRESH_TOKEN_USES = "refresh_token_uses"
SETTINGS = "settings"
DECISIONS = "switch_decisions"
COUNTERS = "counters"
RETIRED_ID = "retired"
"""The `counters` document holding the totals of jobs that retention deleted."""
CHUNK = 500
"""At most this many ids in one `$in` query."""

DUPLICATE_CODES = frozenset({11000, 11001})
NOT_IMPLEMENTED = 238
SERVER_SELECTION_MS = 2000
CONNECT_MS = 2000
SOCKET_MS = 30_000
CLOSE_WAIT_SECONDS = 5.0
FERRETDB_VERSION = "ferretdbVersion"
"""The `buildInfo` field by which FerretDB tells itself apart from MongoDB."""
LOOKUP_COLLECTIONS = (JOBS, EVENTS, OUTCOMES, PAYLOADS, CRASHES, DECISIONS, API_KEYS, REFRESH_TOKENS, CONFIG_CHANGES)
"""The collections that hold lookup indexes on a server whose queries use them."""


def stop_if_cancelled() -> None:
    """Raises CancelledError in a task whose cancellation a driver call swallowed.

    On Python 3.11 `asyncio.wait_for` (which pymongo uses) can complete normally although the task was
    cancelled meanwhile; long-running loops call this each round so that they still stop.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class Duplicate(Exception):
    """An insert met an existing unique key; nothing was written."""


class StoreUnavailable(Unavailable):
    """The database did not confirm the operation; `uncertain` when a write may nevertheless have happened."""

    def __init__(self, uncertain: bool) -> None:
        super().__init__("the job store is unavailable; try again", retry_after=1.0)
        self.uncertain = uncertain


def unavailable(exc: PyMongoError) -> StoreUnavailable:
    """A driver error as StoreUnavailable: a write that never reached a server is certainly not applied."""
    log.warning("database operation failed: %s", type(exc).__name__, extra={"error": str(exc)[:300]})
    return StoreUnavailable(uncertain=not isinstance(exc, ServerSelectionTimeoutError))


@dataclass(frozen=True)
class Features:
    """What the connected server offers."""

    replica_set: bool
    ttl_indexes: bool


class InsertSink(Protocol):
    """Where a batch of inserts into one collection goes: the failures by the documents' index (none: all stored)."""

    async def write(self, docs: list[Doc]) -> dict[int, Exception]: ...

    def close(self) -> None: ...


class DriverInserts:
    """A batch as one `insert_many` (one `insert_one` alone) through pymongo."""

    def __init__(self, collection: AsyncCollection[Doc]) -> None:
        self._collection = collection

    async def write(self, docs: list[Doc]) -> dict[int, Exception]:
        try:
            if len(docs) == 1:
                await self._collection.insert_one(docs[0])
            else:
                await self._collection.insert_many(docs, ordered=False)
        except DuplicateKeyError:
            return {0: Duplicate()}
        except BulkWriteError as exc:
            return _write_failures(exc.details, len(docs))
        except PyMongoError as exc:
            return dict.fromkeys(range(len(docs)), unavailable(exc))
        except InvalidDocument as exc:  # a document over the server's size limit (DocumentTooLarge)
            log.error("a document could not be written: %s", str(exc)[:300])
            return dict.fromkeys(range(len(docs)), StoreUnavailable(uncertain=True))
        return {}

    def close(self) -> None:
        """The collection's client is closed with the store."""


class WireInserts:
    """A batch as unordered OP_MSG `insert` commands on a connection of the collection's own (`store_wire`).

    Documents are encoded with the collection's codec options and, lacking an `_id`, given an ObjectId
    in place, as pymongo does; the reply is read as pymongo's bulk write result would be.
    """

    def __init__(self, collection: AsyncCollection[Doc], connection: WireConnection) -> None:
        self._collection = collection
        self._connection = connection
        self._db = collection.database.name
        self._write_concern = collection.write_concern.document

    async def write(self, docs: list[Doc]) -> dict[int, Exception]:
        failures: dict[int, Exception] = {}
        encoded: list[bytes] = []
        positions: list[int] = []
        options = self._collection.codec_options
        for i, doc in enumerate(docs):
            doc.setdefault("_id", ObjectId())
            data = bson.encode(doc, codec_options=options)
            if len(data) > self._connection.max_document:
                log.error("a %d-byte document is larger than the store takes; it is not written", len(data))
                failures[i] = StoreUnavailable(uncertain=False)
                continue
            encoded.append(data)
            positions.append(i)
        for start, end in self._connection.chunks(encoded):
            try:
                reply = await self._connection.insert(self._db, self._collection.name, encoded[start:end], self._write_concern)
            except WireError as exc:
                log.warning("database operation failed: %s", exc)
                failures.update(dict.fromkeys(positions[start:end], StoreUnavailable(uncertain=exc.sent)))
                failures.update(dict.fromkeys(positions[end:], StoreUnavailable(uncertain=False)))  # never sent
                break
            if not reply.get("ok"):
                log.warning("database operation failed: %s", reply.get("errmsg", "")[:300], extra={"code": reply.get("code")})
                failures.update(dict.fromkeys(positions[start:end], StoreUnavailable(uncertain=True)))
                continue
            for k, failure in _write_failures(reply, end - start).items():
                failures[positions[start + k]] = failure
        return failures

    def close(self) -> None:
        self._connection.close()


class InsertBatcher:
    """Coalesces concurrent inserts into one collection: one write (one transaction) per batch.

    A lone insert goes out at once; inserts arriving while one is in flight leave together when it
    returns. Each caller learns its own document's fate.
    """

    def __init__(self, sink: InsertSink) -> None:
        self._sink = sink
        self._pending: list[tuple[Doc, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def insert(self, doc: Doc) -> None:
        """Inserts `doc`; raises Duplicate or StoreUnavailable."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((doc, fut))
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        self._wake.set()
        await fut

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=CLOSE_WAIT_SECONDS)
            self._task = None
        self._sink.close()

    async def _run(self) -> None:
        while True:
            stop_if_cancelled()
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                stop_if_cancelled()
                batch, self._pending = self._pending, []
                await self._flush(batch)

    async def _flush(self, batch: list[tuple[Doc, asyncio.Future[None]]]) -> None:
        failures = await self._sink.write([doc for doc, _ in batch])
        for i, (_, fut) in enumerate(batch):
            if fut.done():
                continue
            failure = failures.get(i)
            if failure is None:
                fut.set_result(None)
            else:
                fut.set_exception(failure)


def _write_failures(details: Mapping[str, Any], size: int) -> dict[int, Exception]:
    """The failed documents of an unordered insert, from the server's reply or pymongo's bulk result."""
    if details.get("writeConcernErrors") or details.get("writeConcernError"):
        return dict.fromkeys(range(size), StoreUnavailable(uncertain=True))
    failures: dict[int, Exception] = {}
    for error in details.get("writeErrors", []):
        index = int(error["index"])
        failures[index] = Duplicate() if error.get("code") in DUPLICATE_CODES else StoreUnavailable(uncertain=False)
    return failures


def database_uri(cfg: DatabaseConfig, data_dir: Path) -> str:
    """MONGODB_URI, or the embedded FerretDB's Unix socket in the data dir (it has no TCP port)."""
    return cfg.uri or socket_uri(socket_path(data_dir))


def wire_socket(uri: str) -> str | None:
    """The Unix socket of a single server reached without credentials, TLS or options (the embedded store's
    kind), whose hot inserts can go on the wire directly; None for any other deployment (and `connect`
    gives the wire up for a replica set member)."""
    try:
        parsed = parse_uri(uri)
    except (PyMongoError, ValueError):
        return None
    nodes = parsed["nodelist"]
    if len(nodes) != 1 or not nodes[0][0].startswith("/") or parsed["username"] or parsed["options"]:
        return None
    return str(nodes[0][0])


class QueueStore:
    """The database and its collections."""

    def __init__(self, cfg: DatabaseConfig, data_dir: Path, retention_seconds: float) -> None:
        options: dict[str, Any] = {  # AsyncMongoClient's keyword options, of several types
            "serverSelectionTimeoutMS": SERVER_SELECTION_MS,
            "connectTimeoutMS": CONNECT_MS,
            "socketTimeoutMS": SOCKET_MS,
            "appname": "aigw-queue",
        }
        if cfg.embedded:
            options["directConnection"] = True
        self.client: AsyncMongoClient[Doc] = AsyncMongoClient(database_uri(cfg, data_dir), **options)
        self.name = cfg.name
        self.retention_seconds = retention_seconds
        self.features = Features(replica_set=False, ttl_indexes=False)
        self.db: AsyncDatabase[Doc] = self.client.get_database(cfg.name, write_concern=WriteConcern(w=1, j=True))
        self._batchers: dict[str, InsertBatcher] = {}
        self._socket = wire_socket(database_uri(cfg, data_dir))
        self.wire_inserts = self._socket is not None
        """Whether the hot inserts go on the wire directly (`WireInserts`) rather than through pymongo."""

    def coll(self, name: str) -> AsyncCollection[Doc]:
        return self.db.get_collection(name)

    async def ping(self) -> bool:
        """Whether the database answers now (within the server selection timeout)."""
        try:
            await self.client.admin.command("ping")
        except PyMongoError:
            return False
        return True

    async def connect(self) -> Features:
        """Detects the server's features and creates the indexes; raises StoreUnavailable while unreachable."""
        try:
            hello = await self.client.admin.command("hello")
            replica_set = "setName" in hello
            if replica_set:
                self.db = self.client.get_database(self.name, write_concern=WriteConcern(w="majority", j=True))
            build = await self.client.admin.command("buildInfo")
            ttl = await self._ensure_indexes(indexed_queries=FERRETDB_VERSION not in build)
        except PyMongoError as exc:
            raise unavailable(exc) from None
        self.features = Features(replica_set=replica_set, ttl_indexes=ttl)
        if replica_set:  # a member on a socket may not be the primary: pymongo follows the set
            self._socket = None
            self.wire_inserts = False
        self._batchers = {name: InsertBatcher(self._insert_sink(name)) for name in (JOBS, EVENTS, OUTCOMES, CRASHES)}
        return self.features

    def _insert_sink(self, name: str) -> InsertSink:
        """The embedded store's hot inserts go on the wire directly, each collection on a connection of its own."""
        if self._socket is None:
            return DriverInserts(self.coll(name))
        connection = WireConnection(self._socket, connect_timeout=SERVER_SELECTION_MS / 1000, reply_timeout=SOCKET_MS / 1000)
        return WireInserts(self.coll(name), connection)

    async def close(self) -> None:
        for batcher in self._batchers.values():
            await batcher.close()
        await self.client.close()

    async def _ensure_indexes(self, indexed_queries: bool) -> bool:
        """The unique indexes everywhere; the lookup and TTL indexes only where queries use indexes.

        FerretDB's SQLite backend answers every query with a scan (docs/queue.md), so a lookup index
        there only makes each insert slower (about 0.05 ms of its CPU per document for the three on
        `jobs`); lookup indexes an older version created there are dropped.
        """
        await self.coll(JOBS).create_index("idem", unique=True, sparse=True)
        if not indexed_queries:
            for name in LOOKUP_COLLECTIONS:
                await self._drop_lookup_indexes(name)
            return False
        await self.coll(JOBS).create_index([("submitted_at", DESCENDING)])
        await self.coll(JOBS).create_index([("subject", ASCENDING), ("submitted_at", DESCENDING)])
        await self.coll(OUTCOMES).create_index([("state", ASCENDING), ("submitted_at", DESCENDING)])
        await self.coll(EVENTS).create_index("rid")
        await self.coll(API_KEYS).create_index("subject")
        await self.coll(REFRESH_TOKENS).create_index("family_id")
        await self.coll(REFRESH_TOKENS).create_index("subject")
        await self.coll(CONFIG_CHANGES).create_index("model")
        # TTL indexes where the server has them; the sweeper deletes the same documents everywhere. The
        # job TTLs lag a day behind the sweeper so it can count what it removes first.
        day = 86_400
        retention = int(self.retention_seconds)
        ttl = await self._ttl_index(OUTCOMES, "finished_at", retention + day)
        for name, key, seconds in (
            (JOBS, "expires_at", 0),
            (PAYLOADS, "expires_at", 0),
            (CRASHES, "at", retention),
            (DECISIONS, "at", retention),
            (REFRESH_TOKENS, "expires_at", day),
        ):
            if ttl:
                await self._ttl_index(name, key, seconds)
            else:
                await self.coll(name).create_index(key)
        return ttl

    async def _drop_lookup_indexes(self, name: str) -> None:
        info: Mapping[str, Mapping[str, Any]] = await self.coll(name).index_information()  # index name -> its spec
        for index, spec in info.items():
            if index != "_id_" and not spec.get("unique"):
                log.info("dropping index %s.%s: the embedded store answers queries without it", name, index)
                await self.coll(name).drop_index(index)

    async def _ttl_index(self, name: str, key: str, seconds: int) -> bool:
        try:
            await self.coll(name).create_index(key, expireAfterSeconds=seconds)
        except OperationFailure as exc:
            if exc.code != NOT_IMPLEMENTED and "expireAfterSeconds" not in str(exc):
                raise
            await self.coll(name).create_index(key)
            return False
        return True

    async def insert(self, name: str, doc: Doc) -> None:
        """Inserts one document (batched with concurrent inserts for the hot collections)."""
        batcher = self._batchers.get(name)
        if batcher is not None:
            await batcher.insert(doc)
            return
        try:
            await self.coll(name).insert_one(doc)
        except DuplicateKeyError:
            raise Duplicate() from None
        except PyMongoError as exc:
            raise unavailable(exc) from None

    async def find_one(self, name: str, query: Doc, projection: Mapping[str, Any] | None = None) -> Doc | None:
        try:
            return await self.coll(name).find_one(query, projection)
        except PyMongoError as exc:
            raise unavailable(exc) from None

    async def find(
        self,
        name: str,
        query: Doc,
        *,
        projection: Mapping[str, Any] | None = None,
        sort: Sequence[tuple[str, int]] | None = None,
        limit: int = 0,
    ) -> list[Doc]:
        try:
            cursor = self.coll(name).find(query, projection, sort=list(sort) if sort else None, limit=limit)
            return await cursor.to_list(None)
        except PyMongoError as exc:
            raise unavailable(exc) from None

    async def replace(self, name: str, doc: Doc, *, upsert: bool = False) -> bool:
        """Replaces the document with doc's _id; True when one matched (or was upserted)."""
        try:
            result = await self.coll(name).replace_one({"_id": doc["_id"]}, doc, upsert=upsert)
        except DuplicateKeyError:
            raise Duplicate() from None
        except PyMongoError as exc:
            raise unavailable(exc) from None
        return result.matched_count == 1 or result.upserted_id is not None

    async def update_one(self, name: str, query: Doc, update: Doc) -> int:
        try:
            return (await self.coll(name).update_one(query, update)).matched_count
        except PyMongoError as exc:
            raise unavailable(exc) from None

    async def update_many(self, name: str, query: Doc, update: Doc) -> int:
        try:
            return (await self.coll(name).update_many(query, update)).modified_count
        except PyMongoError as exc:
            raise unavailable(exc) from None

    async def delete_many(self, name: str, query: Doc) -> int:
        try:
            return (await self.coll(name).delete_many(query)).deleted_count
        except PyMongoError as exc:
            raise unavailable(exc) from None

    async def delete_ids(self, name: str, ids: Sequence[str]) -> int:
        """Deletes the documents with these ids, in chunks."""
        deleted = 0
        for start in range(0, len(ids), 500):
            deleted += await self.delete_many(name, {"_id": {"$in": list(ids[start : start + 500])}})
        return deleted
