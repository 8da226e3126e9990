"""Error codes and code names of the proxy's refusals.

Distinct numbers in a range MongoDB does not use for named errors, none of them
in any driver's retryable-error list, and the proxy never adds the
``RetryableWriteError`` label, so no driver retries a refused command.
"""

from __future__ import annotations

from typing import Final

GLOBAL_QUERY: Final = 29001
SHARD_KEY_VIOLATION: Final = 29002
SCHEMA_VIOLATION: Final = 29003
COMMAND_DENIED: Final = 29004
PROTOCOL_ERROR: Final = 29005
UNSUPPORTED_OPERATION: Final = 29006

CODE_NAMES: Final[dict[int, str]] = {
    GLOBAL_QUERY: "ScalyGlobalQuery",
    SHARD_KEY_VIOLATION: "ScalyShardKeyViolation",
    SCHEMA_VIOLATION: "ScalySchemaViolation",
    COMMAND_DENIED: "ScalyCommandDenied",
    PROTOCOL_ERROR: "ScalyProtocolError",
    UNSUPPORTED_OPERATION: "ScalyUnsupportedOperation",
}
CODES_BY_NAME: Final[dict[str, int]] = {v: k for k, v in CODE_NAMES.items()}
