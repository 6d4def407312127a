"""What the router's job execution needs of the queue and of a backend: the Protocols its gRPC clients implement."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from aigw.common.v1 import common_pb2
from aigw.ocr.v1 import ocr_pb2
from aigw.queue.v1 import queue_pb2
from aigw.textgen.v1 import textgen_pb2
from aigw_server.router.engines import EngineRoute


class JobQueue(Protocol):
    """The queue's job calls (`aigw_server.runtime.queue_client.QueueClient`); each raises the queue's domain error."""

    async def submit(self, request: queue_pb2.SubmitRequest) -> queue_pb2.SubmitResponse:
        """Admits a job durably (with its lease when `accept_lease` and it can be granted at once)."""

    async def get(self, request_id: str, include_payload: bool = False) -> common_pb2.Job:
        """The job as the queue has it now."""

    async def cancel(self, request_id: str, requested_by: str) -> common_pb2.Job:
        """Cancels a job (a running one at its worker's next heartbeat)."""

    def watch(self, request_id: str) -> AsyncIterator[queue_pb2.WatchJobResponse]:
        """The job's events until it ends."""

    async def acquire(
        self, worker_id: str, wait_ms: int, request_id: str = "", models: Sequence[str] = ()
    ) -> queue_pb2.AcquireJobResponse | None:
        """A granted job and its lease (that job, or any of `models`), or None when nothing was granted within wait_ms."""

    async def heartbeat(self, request: queue_pb2.HeartbeatRequest) -> queue_pb2.HeartbeatResponse:
        """Renews a lease; the answer says whether the job was cancelled."""

    async def complete(self, request: queue_pb2.CompleteJobRequest) -> common_pb2.Job:
        """Stores a leased job's result."""

    async def fail(self, request: queue_pb2.FailJobRequest) -> common_pb2.Job:
        """Reports a failed attempt (requeued while attempts remain when retryable)."""

    async def release(self, request: queue_pb2.ReleaseJobRequest) -> common_pb2.Job:
        """Gives a lease back without using up an attempt."""

    async def list_jobs(self, request: queue_pb2.ListJobsRequest) -> queue_pb2.ListJobsResponse:
        """A page of the history."""


class Backend(Protocol):
    """One backend's data plane (`aigw_server.router.clients.BackendClient`); failures raise domain errors."""

    name: str

    def engine_route(self, model: str) -> AbstractAsyncContextManager[EngineRoute | None]:
        """The direct route to an HTTP engine serving `model` while the call runs; None: through the backend's RPCs."""

    async def generate(self, request: textgen_pb2.GenerateRequest, timeout: float) -> common_pb2.ChatResult:
        """A chat answer in one piece, through the backend."""

    def stream_generate(
        self, request: textgen_pb2.StreamGenerateRequest, timeout: float
    ) -> AsyncGenerator[textgen_pb2.StreamGenerateResponse, None]:
        """A chat answer's deltas, through the backend."""

    async def recognize(self, request: ocr_pb2.RecognizeRequest, timeout: float) -> common_pb2.OcrResult:
        """A document's text in one piece."""

    def stream_recognize(
        self, request: ocr_pb2.StreamRecognizeRequest, timeout: float
    ) -> AsyncGenerator[ocr_pb2.StreamRecognizeResponse, None]:
        """A document's pages as they are done."""
