"""Who may call, as whom, how often, and which requests they may see (no I/O besides the key lookup)."""

from __future__ import annotations

from dataclasses import dataclass

from aigw_server.router.ratelimit import RateLimiter
from aigw_server.runtime.auth import Authenticator, Principal
from aigw_server.runtime.errors import PermissionDenied, request_not_found


@dataclass(frozen=True)
class CallMeta:
    """The request metadata (HTTP headers through the edge) the router honours."""

    authorization: str = ""
    api_key: str = ""
    client_id: str = ""
    priority: str = ""
    resolution: str = ""
    prefer: str = ""
    idempotency_key: str = ""

    @property
    def prefers_async(self) -> bool:
        """`Prefer: respond-async` (RFC 7240) asks for the request id at once."""
        return any(p.strip().lower() == "respond-async" for p in self.prefer.split(","))


@dataclass(frozen=True)
class Caller:
    """An authenticated caller and the client id its requests are accounted to."""

    principal: Principal
    client_id: str


class Gate:
    """Authentication, the X-Client-ID rule, the rate limit and request visibility."""

    def __init__(self, authenticator: Authenticator, limiter: RateLimiter) -> None:
        self.authenticator = authenticator
        self.limiter = limiter

    async def identify(self, meta: CallMeta) -> Caller:
        """The caller, or UNAUTHENTICATED / PERMISSION_DENIED."""
        principal = await self.authenticator.authenticate(meta.authorization, meta.api_key)
        return Caller(principal, principal.client_id(meta.client_id))

    async def admit(self, meta: CallMeta) -> Caller:
        """The caller of an inference request, after its client's rate limit (RESOURCE_EXHAUSTED with retry info)."""
        caller = await self.identify(meta)
        self.limiter.check(caller.client_id, caller.principal.role)
        return caller

    @staticmethod
    def own_subject(caller: Caller) -> str:
        """Whose history a caller lists: always its own verified subject, admins included (never a parameter)."""
        if not caller.principal.subject:
            raise PermissionDenied("this credential names no user, so it has no request history")
        return caller.principal.subject

    @staticmethod
    def check_visible(caller: Caller, request_id: str, subject: str) -> None:
        """Users see their own requests, admins every request; others get NOT_FOUND (existence does not leak)."""
        if subject != caller.principal.subject and not caller.principal.is_admin:
            raise request_not_found(request_id)
