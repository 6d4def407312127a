"""GET /v1/requests through the edge: each caller lists only their own requests, with the admin history's filters."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio

from aigw.common.v1 import common_pb2
from aigw.router.v1 import router_pb2
from harness.ferretdb import FerretDBProcess
from tests.integration.router.harness import MODEL, Mesh, Upstream, bearer, edge_before, mesh_on, textgen_backend, upstreams

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]


@dataclass
class History:
    """A mesh behind an edge, and the requests each user made before the tests list them."""

    mesh: Mesh
    base_url: str
    made: dict[str, list[str]]
    middle: str

    def client(self, subject: str = "", role: str = "user", client_ids: tuple[str, ...] = ()) -> httpx.AsyncClient:
        headers = {"authorization": f"Bearer {self.mesh.token(subject, role, client_ids)}"} if subject else {}
        return httpx.AsyncClient(base_url=self.base_url, timeout=30, headers=headers)


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with upstreams(()) as (up,):
        yield up


async def chat(mesh: Mesh, subject: str, role: str = "user", client_id: str = "") -> str:
    request = router_pb2.ChatRequest(model=MODEL, messages=[common_pb2.ChatMessage(role="user", content="hi")])
    client_ids = (client_id,) if client_id else ()
    extra = {"x_client_id": client_id} if client_id else {}
    reply = await mesh.router.Chat(request, metadata=bearer(mesh.token(subject, role, client_ids), **extra), timeout=30)
    request_id: str = reply.request_id
    return request_id


def rfc3339(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def history(
    ferretdb: FerretDBProcess, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[History]:
    async with mesh_on(ferretdb, tmp_path_factory.mktemp("router-history"), [textgen_backend("tg-0", upstream)]) as mesh:
        made: dict[str, list[str]] = {"alice": [], "bob": [], "root": []}
        made["alice"].append(await chat(mesh, "alice"))
        made["bob"].append(await chat(mesh, "bob"))
        await asyncio.sleep(0.05)
        middle = rfc3339(datetime.now(UTC))
        await asyncio.sleep(0.05)
        made["alice"].append(await chat(mesh, "alice", client_id="app-1"))
        made["alice"].append(await chat(mesh, "alice"))
        made["bob"].append(await chat(mesh, "bob"))
        made["root"].append(await chat(mesh, "root", role="admin"))
        async with edge_before(mesh) as edge_port:
            yield History(mesh, f"http://127.0.0.1:{edge_port}", made, middle)


async def listed(client: httpx.AsyncClient, **params: Any) -> list[str]:
    reply = await client.get("/v1/requests", params=params)
    assert reply.status_code == 200, reply.text
    return [r["request_id"] for r in reply.json().get("requests", [])]


async def test_each_user_sees_only_their_own_requests_newest_first(history: History) -> None:
    for subject in ("alice", "bob"):
        async with history.client(subject) as client:
            assert await listed(client) == list(reversed(history.made[subject]))


async def test_an_admin_lists_only_their_own_requests_here(history: History) -> None:
    async with history.client("root", "admin") as client:
        assert await listed(client) == history.made["root"]


async def test_no_parameter_reaches_another_users_history(history: History) -> None:
    bobs = set(history.made["bob"])
    async with history.client("alice") as client:
        for params in ({"subject": "bob"}, {"client_id": "bob"}, {"owner": "bob"}):
            reply = await client.get("/v1/requests", params=params)
            shown = {r["request_id"] for r in reply.json().get("requests", [])} if reply.status_code == 200 else set()
            assert reply.status_code in (200, 400), reply.text
            assert not shown & bobs


async def test_filters_narrow_the_callers_history(history: History) -> None:
    alice = history.made["alice"]
    async with history.client("alice") as client:
        assert await listed(client, client_id="app-1") == [alice[1]]
        assert await listed(client, model=MODEL) == list(reversed(alice))
        assert await listed(client, model="no-such-model") == []
        assert await listed(client, state="SUCCEEDED") == list(reversed(alice))
        assert await listed(client, state="FAILED") == []
        assert await listed(client, since=history.middle) == [alice[2], alice[1]]
        assert await listed(client, until=history.middle) == [alice[0]]


async def test_pages_follow_each_other_without_overlap(history: History) -> None:
    async with history.client("alice") as client:
        first = (await client.get("/v1/requests", params={"page_size": 2})).json()
        assert len(first["requests"]) == 2
        assert first["next_page_token"]
        rest = (await client.get("/v1/requests", params={"page_size": 2, "page_token": first["next_page_token"]})).json()
        ids = [r["request_id"] for r in first["requests"] + rest["requests"]]
        assert ids == list(reversed(history.made["alice"]))
        assert not rest.get("next_page_token")


async def test_a_tampered_page_token_is_400(history: History) -> None:
    async with history.client("alice") as client:
        for raw in (b"x|y", b"-5|r1", b"1|{$gt: 1}"):
            bad = base64.urlsafe_b64encode(raw).decode()
            reply = await client.get("/v1/requests", params={"page_token": bad})
            assert reply.status_code == 400, (bad, reply.text)
            assert "page_token" in reply.text
        for bad in ("not-a-token", "%%%"):
            reply = await client.get("/v1/requests", params={"page_token": bad})
            assert reply.status_code == 400, (bad, reply.text)
            assert "page_token" in reply.text


async def test_bad_listings_are_400(history: History) -> None:
    async with history.client("alice") as client:
        for params in ({"page_size": 501}, {"page_size": -1}, {"since": history.middle, "until": history.middle}):
            reply = await client.get("/v1/requests", params=params)
            assert reply.status_code == 400, (params, reply.text)


async def test_no_credentials_is_401(history: History) -> None:
    async with history.client() as client:
        reply = await client.get("/v1/requests")
        assert reply.status_code == 401, reply.text
