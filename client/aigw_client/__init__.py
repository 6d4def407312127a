"""The aigw client: a typed Python SDK (`AigwClient`, `AsyncAigwClient`) and the `aigw` command line.

Installable alone (`pip install ./client`): it needs grpcio, protobuf and the gateway's generated stubs
(the `aigw.*.v1` packages it ships), nothing of the server side.
"""

from aigw_client.client import *  # noqa: F403
from aigw_client.client import __all__ as __all__
