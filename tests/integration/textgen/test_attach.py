"""Attach mode when nothing answers at the configured URL."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from aigw.common.v1 import common_pb2
from aigw_server.textgen.service import build
from tests.helpers import free_port
from tests.integration.textgen.helpers import config, serving

pytestmark = pytest.mark.timeout(60)


async def test_attaching_to_a_silent_url_is_not_serving_and_fails_fast(tiny_model_dir: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"

    async with serving(build(config(tiny_model_dir, mode="attach", url=url), env={})) as client:
        health = await client.health_status()
        status = await client.status()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.generate()

    assert health == "NOT_SERVING"
    assert status.state == common_pb2.BACKEND_STATE_CRASHED
    assert list(status.loaded_models) == []
    assert "is not answering" in status.detail
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
