"""The aigw gateway's server side: one package per service, and `runtime`, what they share."""

import os

# The services start child processes (model servers, Tesseract) while gRPC's threads are busy, and a child
# execs at once without touching gRPC. gRPC's fork handlers would run in the forked child all the same and
# can abort it before its exec (a failed check in the epoll poller: the model server "exits during startup
# with SIGABRT, no output"). They are turned off here, before anything of the package imports gRPC.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
