"""The router's table of HTTP engines it calls directly: one per textgen backend, from its GetEngines answer.

textgen stays the engines' control plane; the router only learns where each engine listens, what it
serves, how it wants its requests and the credential to call it, and refreshes that whenever the
backend's status changes (a load, unload, switch or restart can bring a new URL or key). The keys
live here in memory only: never logged, never shown.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aigw.backend.v1 import backend_pb2
from aigw.common.v1 import common_pb2
from aigw_server.engines.chat import ChatTarget
from aigw_server.engines.openai_http import EngineClient

ClientFactory = Callable[[str, str, int, float], EngineClient]
"""(base_url, api_key, capacity, timeout) -> a pooled client."""


def status_fingerprint(status: common_pb2.BackendStatus) -> Hashable:
    """What changes whenever the engines may have changed: state, loaded models, restarts."""
    return (status.state, tuple(sorted(status.loaded_models)), status.restarts)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def reachable(base_url: str, backend_address: str) -> bool:
    """Whether the router can reach `base_url`: an engine on loopback only from the machine of its textgen,
    which a textgen backend on loopback tells (the embedded mesh); elsewhere the call goes through textgen."""
    host = urlsplit(base_url).hostname or ""
    if not host:
        return False
    if not _is_loopback(host):
        return True
    return _is_loopback(backend_address.rsplit(":", 1)[0].strip("[]"))


def default_client(base_url: str, api_key: str, capacity: int, timeout: float) -> EngineClient:
    return EngineClient(base_url, capacity=capacity, timeout=timeout, api_key=api_key)


@dataclass(frozen=True)
class EngineRoute:
    """How to run one model on one engine directly."""

    client: EngineClient
    target: ChatTarget


@dataclass
class EngineTable:
    """The direct routes of one backend; clients are pooled per (URL, key) and closed once unused and gone."""

    backend_address: str
    make_client: ClientFactory = default_client
    routes: dict[str, EngineRoute] = field(default_factory=dict)
    fingerprint: Hashable | None = None
    _clients: dict[tuple[str, str], EngineClient] = field(default_factory=dict, repr=False)  # keyed by (URL, key)
    _using: dict[EngineClient, int] = field(default_factory=dict)
    _retired: list[EngineClient] = field(default_factory=list)

    def needs_refresh(self, fingerprint: Hashable) -> bool:
        return fingerprint != self.fingerprint

    def invalidate(self) -> None:
        """A direct call failed: ask the backend again at the next status poll (the key or URL may be new)."""
        self.fingerprint = None

    def update(self, fingerprint: Hashable, engines: Sequence[backend_pb2.Engine]) -> None:
        """Replaces the routes with the backend's answer; clients no engine uses any more are retired."""
        routes: dict[str, EngineRoute] = {}
        clients: dict[tuple[str, str], EngineClient] = {}
        for engine in engines:
            if not reachable(engine.base_url, self.backend_address):
                continue
            key = (engine.base_url, engine.api_key)
            client = clients.get(key) or self._clients.get(key)
            if client is None:
                client = self.make_client(engine.base_url, engine.api_key, engine.capacity, engine.request_timeout_seconds)
            clients[key] = client
            for m in engine.models:
                target = ChatTarget(
                    model=m.model,
                    upstream_name=m.served_name,
                    default_max_tokens=m.default_max_tokens,
                    priority_scheduling=engine.priority_scheduling,
                    stream_usage=engine.stream_usage,
                )
                routes[m.model] = EngineRoute(client, target)
        self._retired += [c for k, c in self._clients.items() if k not in clients]
        self._clients, self.routes, self.fingerprint = clients, routes, fingerprint

    def acquire(self, model: str) -> EngineRoute | None:
        """The route for `model`, counted as in use until `release`; None: call through textgen."""
        route = self.routes.get(model)
        if route is not None:
            self._using[route.client] = self._using.get(route.client, 0) + 1
        return route

    def release(self, route: EngineRoute) -> None:
        left = self._using[route.client] - 1
        if left:
            self._using[route.client] = left
        else:
            del self._using[route.client]

    def closable(self) -> list[EngineClient]:
        """Retired clients no call uses any more (the caller closes them)."""
        done = [c for c in self._retired if c not in self._using]
        self._retired = [c for c in self._retired if c in self._using]
        return done

    def all_clients(self) -> list[EngineClient]:
        return [*self._clients.values(), *self._retired]
