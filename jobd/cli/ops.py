"""Op names the CLI sends that `jobd_client.protocol` does not name yet.

`logs`, `reload` and `handlers` are newer than the protocol module on this
branch; once it defines OP_LOGS, OP_RELOAD and OP_HANDLERS, use those and
delete this module. The names are the wire contract (docs/protocol.md).
"""
from __future__ import annotations

from typing import Final

OP_LOGS: Final = "logs"
OP_RELOAD: Final = "reload"
OP_HANDLERS: Final = "handlers"
