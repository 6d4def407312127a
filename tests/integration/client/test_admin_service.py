"""The client against the real admin and queue services (on the embedded FerretDB): sessions, identities, model config."""

from __future__ import annotations

from pathlib import Path

import pytest

from aigw_client import render as text
from aigw_client.client import AsyncAigwClient, AuthError, Conflict, InvalidRequest, TokenInfo
from harness.ferretdb import FerretDBProcess
from tests.integration.admin.helpers import ADMIN_PASSWORD, mesh, raw_config


async def test_sessions_identities_and_config_through_the_client(ferretdb: FerretDBProcess, db_name: str, tmp_path: Path) -> None:
    tokens: list[TokenInfo] = []
    async with (
        mesh(raw_config(ferretdb.uri, db_name, tmp_path)) as m,
        AsyncAigwClient(m.admin_address, env={}, on_token=tokens.append) as gw,
    ):
        first = await gw.login("admin", ADMIN_PASSWORD)
        second = await gw.refresh()
        assert first.role == "admin"
        assert second.access_token != first.access_token
        assert second.refresh_token != first.refresh_token
        assert tokens == [first, second]

        user = await gw.create_user("bobby", "a very long password", allowed_client_ids=["team-b"])
        assert list(user.allowed_client_ids) == ["team-b"]
        assert "bobby" in [u.username for u in await gw.list_users()]
        key = await gw.create_api_key(subject="bobby", name="ci")
        assert key.api_key.startswith("aigw_")
        assert (await gw.revoke_api_key(key.key.key_id)).HasField("revoked_at")
        await gw.update_user("bobby", disabled=True)
        with pytest.raises(InvalidRequest, match="disabled"):
            await gw.create_api_key(subject="bobby")

        config = await gw.set_model_config("chat-a", {"max_concurrent": "4", "temperature": "0.2"})
        assert config.max_concurrent == 4
        assert config.default_params.temperature == pytest.approx(0.2)
        assert config.version == (await gw.get_model_config("chat-a")).version
        with pytest.raises(Conflict):
            await gw.set_model_config("chat-a", {"max_concurrent": "5"}, expected_version=config.version - 1)
        assert (await gw.queue_stats("chat-a")).max_concurrent == 4
        series = await gw.queue_series("chat-a", minutes=3)
        assert len(series.minutes) == 3
        assert "minute" in text.queue_series(series).splitlines()[1]
        with pytest.raises(InvalidRequest, match="minutes"):
            await gw.queue_series("chat-a", minutes=61)

        await gw.logout()
        with pytest.raises(AuthError):
            await gw.list_users()
