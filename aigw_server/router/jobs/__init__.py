"""The router's job execution: submit, lease, run on a backend, heartbeat, report, follow; the queue behind `JobQueue`.

`inference` submits a caller's job and answers, waits for or follows it; `own_jobs` runs the jobs of
this router's waiting callers until they end (acquiring, retrying, watching another worker); `orphans`
runs granted jobs nobody waits for; `runner` runs one leased attempt on a backend (heartbeats, deadline,
cancellation, the report); `events` is what a running job tells the call waiting on it. They reach the
queue and the backends only through the Protocols of `contracts`, which the gRPC clients implement.
"""
