"""The indexes the queue keeps on the embedded store: the unique ones that enforce, no lookup ones that only cost."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.errors import DuplicateKeyError

from aigw.queue.v1 import queue_pb2
from aigw_server.queue.store import JOBS, LOOKUP_COLLECTIONS, OUTCOMES
from aigw_server.runtime.config import GatewayConfig
from harness.ferretdb import FerretDBProcess
from tests.integration.queue.conftest import CHAT, start_queue


def store_client(ferretdb: FerretDBProcess) -> AsyncMongoClient[dict[str, object]]:
    return AsyncMongoClient(ferretdb.uri, directConnection=True)


async def indexes(ferretdb: FerretDBProcess, db: str, collection: str) -> dict[str, bool]:
    """Each index of `collection` by name, and whether it is unique (`_id` always is)."""
    client = store_client(ferretdb)
    try:
        info = await client[db][collection].index_information()
    finally:
        await client.close()
    return {name: name == "_id_" or bool(spec.get("unique")) for name, spec in info.items()}


async def test_the_embedded_store_keeps_only_unique_indexes_and_they_still_enforce(
    make_queue: Callable[..., GatewayConfig], ferretdb: FerretDBProcess, db_name: str
) -> None:
    # A data dir from an older version: lookup indexes on the hot collections.
    client = store_client(ferretdb)
    try:
        await client[db_name][JOBS].create_index([("submitted_at", DESCENDING)])
        await client[db_name][OUTCOMES].create_index([("state", ASCENDING), ("submitted_at", DESCENDING)])
    finally:
        await client.close()

    queue = await start_queue(make_queue())
    try:
        assert await indexes(ferretdb, db_name, JOBS) == {"_id_": True, "idem_1": True}
        for name in LOOKUP_COLLECTIONS:
            assert all(unique for unique in (await indexes(ferretdb, db_name, name)).values()), name

        first = await queue.submit("once", idempotency_key="k-1", client_id="c")
        listed = await queue.jobs.ListJobs(queue_pb2.ListJobsRequest(model=CHAT, client_id="c"))
        assert [j.request_id for j in listed.jobs] == [first.job.request_id]

        # The store itself still refuses a second job with the same scoped key (what a restarted queue
        # that had not yet read the first one back would run into).
        client = store_client(ferretdb)
        try:
            stored = await client[db_name][JOBS].find_one({"_id": first.job.request_id})
            assert stored is not None
            with pytest.raises(DuplicateKeyError):
                await client[db_name][JOBS].insert_one({"_id": "another", "idem": stored["idem"]})
        finally:
            await client.close()
    finally:
        await queue.stop()
