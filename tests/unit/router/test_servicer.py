"""RouterService in process: metadata and bodies to queue jobs, jobs back to answers, errors to gRPC statuses.

grpc_testing drives only synchronous servicers; RouterServicer is a grpc.aio servicer, so its methods are
called directly with a small in-process ServicerContext, against an in-memory queue and backend (the
Protocols of `aigw_server.router.jobs.contracts`). A domain error is turned into the status the server's
error boundary answers with (`aigw_server.runtime.rpc_errors.status_proto`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

import grpc
import orjson
import pytest
from google.api import httpbody_pb2
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from aigw.common.v1 import common_pb2
from aigw.ocr.v1 import ocr_pb2
from aigw.queue.v1 import queue_pb2
from aigw.router.v1 import router_pb2
from aigw.textgen.v1 import textgen_pb2
from aigw_server.router.backends import BackendPool, StatusReport
from aigw_server.router.background import ConfigRefresher, ReadinessWatch, StatusPoller
from aigw_server.router.catalog import DynamicModel, ModelCatalog
from aigw_server.router.engines import EngineRoute
from aigw_server.router.gate import Gate
from aigw_server.router.jobs.inference import Inference
from aigw_server.router.jobs.own_jobs import OwnJobs
from aigw_server.router.jobs.runner import JobRunner
from aigw_server.router.ocr_checks import OcrPreflight
from aigw_server.router.ratelimit import RateLimiter
from aigw_server.router.service import document_rules
from aigw_server.router.servicer import RouterServicer
from aigw_server.runtime.auth import Authenticator, TokenSigner, TokenVerifier
from aigw_server.runtime.config import AuthConfig, BackendConfig, GatewayConfig, ModelConfig
from aigw_server.runtime.errors import GatewayError, InvalidArgument, NotFound, ResourceExhausted, Unavailable
from aigw_server.runtime.rpc_errors import status_proto
from tests.unit.servicer_calls import InProcessContext, InProcessService

pytestmark = pytest.mark.timeout(30)

SECRET = "s" * 48
AUTH = AuthConfig(jwt_secret=SECRET, access_token_ttl_seconds=3600)
WORKER = "router-test"
Reply = TypeVar("Reply")


class Context:
    """A grpc.aio ServicerContext as far as the router uses it: metadata in, initial and trailing metadata out,
    done callbacks."""

    def __init__(self, metadata: Sequence[tuple[str, str]] = ()) -> None:
        self.metadata = tuple(metadata)
        self.initial: list[tuple[str, str]] = []
        self.trailing: list[tuple[str, str]] = []
        self.done_callbacks: list[Callable[[Any], None]] = []

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    async def send_initial_metadata(self, metadata: Sequence[tuple[str, str]]) -> None:
        self.initial.extend(metadata)

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, str]]) -> None:
        self.trailing = list(metadata)

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        self.done_callbacks.append(callback)

    def end(self) -> None:
        """The call ends (as the server does once the RPC returned, failed or was cancelled)."""
        for callback in self.done_callbacks:
            callback(self)


def on(context: Context) -> grpc.aio.ServicerContext[Any, Any]:
    """`context` where the servicer's signature wants a grpc.aio one (it uses only what Context has)."""
    return cast("grpc.aio.ServicerContext[Any, Any]", context)


class Queue:
    """The queue's job calls in memory: admits, grants at once when asked to, stores results and failures."""

    def __init__(self) -> None:
        self.jobs: dict[str, common_pb2.Job] = {}
        self.submitted: list[queue_pb2.SubmitRequest] = []
        self.failures: list[queue_pb2.FailJobRequest] = []
        self.cancelled: list[tuple[str, str]] = []
        self.full = False
        self.refused: list[str] = []
        self.watch_events: list[queue_pb2.WatchJobResponse] = []

    async def submit(self, request: queue_pb2.SubmitRequest) -> queue_pb2.SubmitResponse:
        if self.full:
            self.refused.append(request.request_id)
            raise ResourceExhausted(f"model {request.model!r} has 10 requests waiting; try again later", retry_after=2.5)
        self.submitted.append(request)
        job = common_pb2.Job(
            request_id=request.request_id,
            model=request.model,
            priority=request.priority,
            client_id=request.client_id,
            subject=request.subject,
            state=common_pb2.QUEUED,
            position=3,
        )
        self.jobs[job.request_id] = job
        reply = queue_pb2.SubmitResponse(job=job)
        if request.accept_lease:
            job.state = common_pb2.RUNNING
            job.position = 0
            reply.job.CopyFrom(job)
            reply.lease.CopyFrom(queue_pb2.Lease(lease_id=f"lease-{job.request_id}", ttl_ms=30_000, attempt=1))
        return reply

    async def get(self, request_id: str, include_payload: bool = False) -> common_pb2.Job:
        if request_id not in self.jobs:
            raise NotFound(f"request {request_id} not found")
        return self.jobs[request_id]

    async def cancel(self, request_id: str, requested_by: str) -> common_pb2.Job:
        self.cancelled.append((request_id, requested_by))
        job = await self.get(request_id)
        job.state = common_pb2.CANCELLED
        return job

    async def watch(self, request_id: str) -> AsyncIterator[queue_pb2.WatchJobResponse]:
        for event in self.watch_events:
            yield event

    async def acquire(
        self, worker_id: str, wait_ms: int, request_id: str = "", models: Sequence[str] = ()
    ) -> queue_pb2.AcquireJobResponse | None:
        await asyncio.sleep(wait_ms / 1000)
        return None

    async def heartbeat(self, request: queue_pb2.HeartbeatRequest) -> queue_pb2.HeartbeatResponse:
        return queue_pb2.HeartbeatResponse()

    async def complete(self, request: queue_pb2.CompleteJobRequest) -> common_pb2.Job:
        job = self.jobs[request.request_id]
        job.state = common_pb2.SUCCEEDED
        if request.HasField("chat_result"):
            job.chat_result.CopyFrom(request.chat_result)
        else:
            job.ocr_result.CopyFrom(request.ocr_result)
        return job

    async def fail(self, request: queue_pb2.FailJobRequest) -> common_pb2.Job:
        self.failures.append(request)
        job = self.jobs[request.request_id]
        job.state = common_pb2.CANCELLED if request.error.code == "CANCELLED" else common_pb2.FAILED
        job.error.CopyFrom(request.error)
        return job

    async def release(self, request: queue_pb2.ReleaseJobRequest) -> common_pb2.Job:
        job = self.jobs[request.request_id]
        job.state = common_pb2.QUEUED
        return job

    async def list_jobs(self, request: queue_pb2.ListJobsRequest) -> queue_pb2.ListJobsResponse:
        jobs = [j for j in self.jobs.values() if not request.subject or j.subject == request.subject]
        return queue_pb2.ListJobsResponse(jobs=jobs, next_page_token="next")


class Backend:
    """A textgen backend answering through its RPCs: `words` streamed, or held until `release` is set."""

    name = "tg"

    def __init__(self) -> None:
        self.words = ["Hel", "lo"]
        self.release: asyncio.Event | None = None
        self.fail: GatewayError | None = None
        self.calls = 0
        self.called = asyncio.Event()

    @contextlib.asynccontextmanager
    async def engine_route(self, model: str) -> AsyncIterator[EngineRoute | None]:
        yield None

    async def generate(self, request: textgen_pb2.GenerateRequest, timeout: float) -> common_pb2.ChatResult:
        self.calls += 1
        self.called.set()
        if self.release is not None:
            await self.release.wait()
        if self.fail is not None:
            raise self.fail
        usage = common_pb2.Usage(prompt_tokens=2, completion_tokens=2, total_tokens=4)
        message = common_pb2.ChatMessage(role="assistant", content="".join(self.words))
        return common_pb2.ChatResult(model=request.model, message=message, finish_reason="stop", usage=usage)

    async def stream_generate(
        self, request: textgen_pb2.StreamGenerateRequest, timeout: float
    ) -> AsyncGenerator[textgen_pb2.StreamGenerateResponse, None]:
        self.calls += 1
        self.called.set()
        for word in self.words:
            yield textgen_pb2.StreamGenerateResponse(delta=word)
        yield textgen_pb2.StreamGenerateResponse(finish_reason="stop", usage=common_pb2.Usage(total_tokens=4))

    async def recognize(self, request: ocr_pb2.RecognizeRequest, timeout: float) -> common_pb2.OcrResult:
        raise Unavailable("no OCR here")

    async def stream_recognize(
        self, request: ocr_pb2.StreamRecognizeRequest, timeout: float
    ) -> AsyncGenerator[ocr_pb2.StreamRecognizeResponse, None]:
        raise Unavailable("no OCR here")
        yield ocr_pb2.StreamRecognizeResponse()


class Router:
    """A RouterServicer over the in-memory queue and backend, with a token issuer for its callers."""

    def __init__(self) -> None:
        cfg = GatewayConfig(
            auth=AUTH,
            models={"chat-a": ModelConfig(default_max_tokens=16)},
            backends=(BackendConfig(name="tg", kind="textgen", address="127.0.0.1:1", models=("chat-a",)),),
        )
        self.queue = Queue()
        self.backend = Backend()
        self.signer = TokenSigner(AUTH, SECRET)
        self.pool = BackendPool(cfg.backends, cfg.routing)
        self.pool.observe("tg", StatusReport(state="ready", loaded_models=frozenset({"chat-a"}), in_flight=0, capacity=4))
        catalog = ModelCatalog(cfg.models)
        runner = JobRunner(self.queue, self.pool, {"tg": self.backend}, WORKER, no_backend_wait=0.0)
        inference = Inference(self.queue, OwnJobs(self.queue, runner), WORKER)
        gate = Gate(Authenticator(TokenVerifier(AUTH, SECRET), None), RateLimiter(cfg.rate_limit))
        refresher = ConfigRefresher(self._no_dynamic_config, catalog)
        readiness = ReadinessWatch(refresher, StatusPoller(self.pool, {}, 1.0))
        preflight = OcrPreflight(document_rules(cfg), self.pool.languages)
        self.servicer = RouterServicer(gate, catalog, inference, self.queue, runner, (readiness, "test"), preflight)

    @staticmethod
    async def _no_dynamic_config() -> dict[str, DynamicModel]:
        return {}

    def context(self, subject: str = "alice", role: str = "user", **headers: str) -> Context:
        token, _ = self.signer.issue_access(subject, role)
        metadata = [("authorization", f"Bearer {token}")]
        metadata += [(name.replace("_", "-"), value) for name, value in headers.items()]
        return Context(metadata)


class BoundaryContext(InProcessContext):
    """An in-process context that also takes the done callbacks a waiting call registers."""

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        return None


def served(router: Router) -> InProcessService:
    """The router's RPCs behind the interceptor of every aigw server (request id, error boundary)."""
    return InProcessService(router_pb2.DESCRIPTOR.services_by_name["RouterService"], router.servicer, "router")


def sent_status(context: InProcessContext) -> status_pb2.Status:
    """The google.rpc.Status a failed call sent in its trailing metadata."""
    [details] = [value for key, value in context.trailing_metadata_sent if key == "grpc-status-details-bin"]
    assert isinstance(details, bytes)
    return status_pb2.Status.FromString(details)


def sent_request_ids(context: InProcessContext) -> list[str | bytes]:
    return [value for key, value in context.trailing_metadata_sent if key == "x-request-id"]


def chat_request(**fields: Any) -> router_pb2.ChatRequest:
    body: dict[str, Any] = {"model": "chat-a", "messages": [common_pb2.ChatMessage(role="user", content="hi")], **fields}
    return router_pb2.ChatRequest(**body)


async def status_of(call: Awaitable[Any]) -> status_pb2.Status:
    """The status the server's error boundary answers a failed call with."""
    with pytest.raises(GatewayError) as info:
        await call
    return status_proto(info.value)


def retry_delay(status: status_pb2.Status) -> float:
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            delay: duration_pb2.Duration = info.retry_delay
            return delay.seconds + delay.nanos / 1e9
    raise AssertionError("no RetryInfo")


def field_violations(status: status_pb2.Status) -> list[str]:
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    return fields


async def test_chat_submits_the_request_as_a_job_and_answers_with_its_result_and_request_id() -> None:
    router = Router()
    context = router.context(x_priority="HIGH", x_client_id="alice")
    reply = await router.servicer.Chat(chat_request(max_tokens=8), on(context))
    [submitted] = router.queue.submitted
    assert (submitted.model, submitted.priority, submitted.client_id, submitted.subject) == (
        "chat-a",
        common_pb2.PRIORITY_HIGH,
        "alice",
        "alice",
    )
    assert (submitted.owner_id, submitted.accept_lease) == (WORKER, True)
    assert [(m.role, m.content) for m in submitted.chat.messages] == [("user", "hi")]
    assert submitted.chat.params.max_tokens == 8
    assert (context.initial, context.trailing) == ([], [("x-request-id", submitted.request_id)])
    assert reply.request_id == submitted.request_id
    assert (reply.status, reply.response, reply.finish_reason, reply.usage.total_tokens) == (
        common_pb2.SUCCEEDED,
        "Hello",
        "stop",
        4,
    )
    assert (reply.message.role, reply.message.content) == ("assistant", "Hello")


async def test_chat_with_prefer_respond_async_answers_queued_at_once_and_runs_nothing_here() -> None:
    router = Router()
    context = router.context(prefer="respond-async")
    reply = await router.servicer.Chat(chat_request(), on(context))
    [submitted] = router.queue.submitted
    assert (submitted.owner_id, submitted.accept_lease, submitted.priority) == ("", False, common_pb2.PRIORITY_NORMAL)
    assert (reply.request_id, reply.status, reply.position, reply.response) == (submitted.request_id, common_pb2.QUEUED, 3, "")
    assert (context.initial, context.trailing) == ([], [("x-request-id", submitted.request_id)])
    assert router.backend.calls == 0


async def test_a_full_queue_is_resource_exhausted_with_retry_info() -> None:
    router = Router()
    router.queue.full = True
    context = router.context()
    status = await status_of(router.servicer.Chat(chat_request(), on(context)))
    assert status.code == code_pb2.RESOURCE_EXHAUSTED
    assert status.message == "model 'chat-a' has 10 requests waiting; try again later"
    assert retry_delay(status) == 2.5
    assert (context.initial, context.trailing) == ([], [])


async def test_a_unary_chat_answers_with_its_request_id_in_trailing_metadata_only() -> None:
    router = Router()
    context = BoundaryContext(router.context().metadata)
    reply = await served(router).unary("Chat", chat_request(), context)
    assert isinstance(reply, router_pb2.ChatResponse)
    assert (reply.status, reply.response) == (common_pb2.SUCCEEDED, "Hello")
    assert context.initial_metadata == ()
    assert context.trailing_metadata_sent == (("x-request-id", reply.request_id),)


async def test_a_refusal_after_the_request_id_is_made_carries_it_beside_the_status_details() -> None:
    router = Router()
    router.queue.full = True
    context = BoundaryContext(router.context().metadata)
    with pytest.raises(grpc.aio.AbortError):
        await served(router).unary("Chat", chat_request(), context)
    status = sent_status(context)
    assert (context.code(), status.code, retry_delay(status)) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        code_pb2.RESOURCE_EXHAUSTED,
        2.5,
    )
    assert sent_request_ids(context) == router.queue.refused
    assert context.initial_metadata == ()


async def test_a_refusal_before_the_request_id_is_made_carries_the_callers_id() -> None:
    router = Router()
    context = BoundaryContext([*router.context().metadata, ("x-request-id", "caller-chosen-7")])
    with pytest.raises(grpc.aio.AbortError):
        await served(router).unary("Chat", chat_request(priority="urgent"), context)
    status = sent_status(context)
    assert (status.code, field_violations(status)) == (code_pb2.INVALID_ARGUMENT, ["priority"])
    assert sent_request_ids(context) == ["caller-chosen-7"]
    assert router.queue.submitted == []


async def test_a_failed_ocr_call_carries_its_request_id_in_trailing_metadata() -> None:
    router = Router()
    context = BoundaryContext(router.context().metadata)
    with pytest.raises(grpc.aio.AbortError):
        await served(router).unary("Ocr", router_pb2.OcrRequest(model="no-such-ocr"), context)
    assert field_violations(sent_status(context)) == ["document"]
    [rid] = sent_request_ids(context)
    assert re.fullmatch(r"[0-9a-f]{32}", str(rid)), "the id the call was given, as the router logs it"


async def test_a_job_that_fails_after_its_request_id_went_out_answers_the_same_id_with_its_status() -> None:
    router = Router()
    router.backend.fail = InvalidArgument("max_tokens: the engine allows at most 4")
    context = BoundaryContext(router.context().metadata)
    with pytest.raises(grpc.aio.AbortError):
        await served(router).unary("Chat", chat_request(), context)
    [submitted] = router.queue.submitted
    assert sent_request_ids(context) == [submitted.request_id]
    assert sent_status(context) == status_pb2.Status(
        code=code_pb2.INVALID_ARGUMENT, message="max_tokens: the engine allows at most 4"
    )


async def test_no_credential_is_unauthenticated_and_submits_nothing() -> None:
    router = Router()
    status = await status_of(router.servicer.Chat(chat_request(), on(Context())))
    assert status.code == code_pb2.UNAUTHENTICATED
    assert router.queue.submitted == []


async def test_an_unknown_priority_is_invalid_argument_naming_the_field() -> None:
    router = Router()
    status = await status_of(router.servicer.Chat(chat_request(priority="urgent"), on(router.context())))
    assert status.code == code_pb2.INVALID_ARGUMENT
    assert status.message == "priority: 'urgent' is not a priority (use high, normal or low)"
    assert field_violations(status) == ["priority"]
    assert router.queue.submitted == []


async def test_an_unknown_model_is_not_found() -> None:
    router = Router()
    status = await status_of(router.servicer.Chat(chat_request(model="nope"), on(router.context())))
    assert status.code == code_pb2.NOT_FOUND
    assert router.queue.submitted == []


async def test_stream_chat_sends_the_state_then_each_delta_then_the_end() -> None:
    router = Router()
    context = router.context()
    request = router_pb2.StreamChatRequest(model="chat-a", messages=[common_pb2.ChatMessage(role="user", content="hi")])
    events = [e async for e in router.servicer.StreamChat(request, on(context))]
    rid = router.queue.submitted[0].request_id
    assert (context.initial, context.trailing) == ([("x-request-id", rid)], [])
    assert {e.request_id for e in events} == {rid}
    assert [(e.status, e.delta) for e in events[:-1]] == [
        (common_pb2.RUNNING, ""),
        (common_pb2.RUNNING, "Hel"),
        (common_pb2.RUNNING, "lo"),
    ]
    assert (events[-1].status, events[-1].finish_reason, events[-1].usage.total_tokens) == (common_pb2.SUCCEEDED, "stop", 4)


async def test_a_caller_that_leaves_before_its_answer_cancels_the_job_on_the_backend() -> None:
    router = Router()
    router.backend.release = asyncio.Event()
    context = router.context()
    call = asyncio.ensure_future(router.servicer.Chat(chat_request(), on(context)))
    while router.backend.calls == 0:
        await asyncio.sleep(0.01)
    call.cancel()
    context.end()
    with pytest.raises(asyncio.CancelledError):
        await call
    while not router.queue.failures:
        await asyncio.sleep(0.01)
    [failure] = router.queue.failures
    assert (failure.error.code, failure.error.message, failure.retryable) == (
        "CANCELLED",
        "the request was cancelled: the client went away",
        False,
    )


async def test_a_caller_whose_call_ended_with_its_answer_leaves_the_job_alone() -> None:
    router = Router()
    context = router.context()
    await router.servicer.Chat(chat_request(), on(context))
    context.end()
    await asyncio.sleep(0)
    assert router.queue.cancelled == []
    assert router.queue.failures == []


async def test_someone_elses_request_is_not_found_like_an_unknown_one() -> None:
    router = Router()
    reply = await router.servicer.Chat(chat_request(), on(router.context(subject="alice")))
    theirs = await status_of(
        router.servicer.GetRequest(router_pb2.GetRequestRequest(request_id=reply.request_id), on(router.context(subject="bob")))
    )
    unknown = await status_of(
        router.servicer.GetRequest(router_pb2.GetRequestRequest(request_id="0" * 32), on(router.context(subject="bob")))
    )
    assert (theirs.code, unknown.code) == (code_pb2.NOT_FOUND, code_pb2.NOT_FOUND)
    own = await router.servicer.GetRequest(
        router_pb2.GetRequestRequest(request_id=reply.request_id), on(router.context(subject="alice"))
    )
    assert (own.request.request_id, own.request.state) == (reply.request_id, common_pb2.SUCCEEDED)


async def test_get_request_without_an_id_is_invalid_argument() -> None:
    router = Router()
    status = await status_of(router.servicer.GetRequest(router_pb2.GetRequestRequest(), on(router.context())))
    assert status.code == code_pb2.INVALID_ARGUMENT
    assert field_violations(status) == ["request_id"]


async def test_cancel_request_cancels_through_the_queue_as_the_caller() -> None:
    router = Router()
    reply = await router.servicer.Chat(chat_request(), on(router.context(prefer="respond-async")))
    cancelled = await router.servicer.CancelRequest(
        router_pb2.CancelRequestRequest(request_id=reply.request_id), on(router.context())
    )
    assert router.queue.cancelled == [(reply.request_id, "alice")]
    assert (cancelled.request.request_id, cancelled.request.state) == (reply.request_id, common_pb2.CANCELLED)


async def test_list_requests_asks_for_the_callers_own_jobs_and_passes_the_page_token_on() -> None:
    router = Router()
    await router.servicer.Chat(chat_request(), on(router.context(subject="alice", prefer="respond-async")))
    await router.servicer.Chat(chat_request(), on(router.context(subject="bob", prefer="respond-async")))
    reply = await router.servicer.ListRequests(router_pb2.ListRequestsRequest(), on(router.context(subject="bob")))
    assert [j.subject for j in reply.requests] == ["bob"]
    assert reply.next_page_token == "next"


async def test_watch_request_names_each_queue_event() -> None:
    router = Router()
    reply = await router.servicer.Chat(chat_request(), on(router.context(prefer="respond-async")))
    job = router.queue.jobs[reply.request_id]
    router.queue.watch_events = [
        queue_pb2.WatchJobResponse(event=queue_pb2.WATCH_EVENT_POSITION, job=job),
        queue_pb2.WatchJobResponse(event=queue_pb2.WATCH_EVENT_GRANTED, job=job),
        queue_pb2.WatchJobResponse(event=queue_pb2.WATCH_EVENT_FINISHED, job=job),
    ]
    request = router_pb2.WatchRequestRequest(request_id=reply.request_id)
    events = [e async for e in router.servicer.WatchRequest(request, on(router.context()))]
    assert [e.event for e in events] == ["position", "granted", "finished"]
    assert {e.request.request_id for e in events} == {reply.request_id}


async def test_a_model_no_backend_holds_is_unavailable_with_retry_info_for_a_waiting_caller() -> None:
    router = Router()
    router.pool.observe("tg", StatusReport(state="idle", loaded_models=frozenset(), in_flight=0, capacity=4))
    status = await status_of(router.servicer.Chat(chat_request(), on(router.context())))
    assert status.code == code_pb2.UNAVAILABLE
    assert status.message.startswith("model 'chat-a' is stopped")
    assert retry_delay(status) == 60.0
    assert router.queue.submitted == []


class HeaderAfterBackend(Context):
    """A call whose initial metadata gets out only once the backend was called (as on a slow connection)."""

    def __init__(self, metadata: Sequence[tuple[str, str]], backend_called: asyncio.Event) -> None:
        super().__init__(metadata)
        self.backend_called = backend_called

    async def send_initial_metadata(self, metadata: Sequence[tuple[str, str]]) -> None:
        await self.backend_called.wait()
        await super().send_initial_metadata(metadata)


async def test_the_backend_call_does_not_wait_for_the_request_id_header_of_a_stream_to_go_out() -> None:
    router = Router()
    backend = router.backend
    token = router.context().metadata

    context = HeaderAfterBackend(token, backend.called)
    stream = router.servicer.StreamChat(
        router_pb2.StreamChatRequest(model="chat-a", messages=chat_request().messages), on(context)
    )
    replies = await asyncio.wait_for(_all(stream), 5)
    assert "".join(r.delta for r in replies) == "Hello"
    assert context.initial == [("x-request-id", replies[0].request_id)]

    # The OpenAI-compatible method is a stream at the gRPC level; an answer that is one JSON body sends no
    # header at all: its id goes in trailing metadata, as a unary answer's does.
    backend.called.clear()
    context = HeaderAfterBackend(token, backend.called)
    body = orjson.dumps({"model": "chat-a", "messages": [{"role": "user", "content": "hi"}]})
    completion = router.servicer.CreateChatCompletion(
        httpbody_pb2.HttpBody(content_type="application/json", data=body), on(context)
    )
    [answer] = await asyncio.wait_for(_all(completion), 5)
    rid = router.queue.submitted[-1].request_id
    assert orjson.loads(answer.data)["id"] == f"chatcmpl-{rid}"
    assert (context.initial, context.trailing) == ([], [("x-request-id", rid)])  # one JSON body: the id with its end


async def _all(stream: AsyncIterator[Reply]) -> list[Reply]:
    return [reply async for reply in stream]
