"""The user name of an authentication command, for the logs. Pure.

The proxy never takes part in authentication; it only reads who is
authenticating so that refusal log lines can name the user:

- SCRAM (``saslStart`` or a hello's ``speculativeAuthenticate``): the ``n=``
  attribute of the client-first message (RFC 5802), never anything else of it;
- PLAIN (``saslStart``): the authentication identity (RFC 4616), the password
  next to it is skipped and never kept;
- MONGODB-X509 (``authenticate``): the ``user`` field, when the driver sends one.

Payloads are never logged or returned; only the user name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

MAX_USER = 256
_SCRAM: Final = ("SCRAM-SHA-1", "SCRAM-SHA-256")


def user_of(body: Mapping[str, Any]) -> str | None:
    """The user an auth command (or a hello with speculativeAuthenticate) names, if any."""
    spec = body.get("speculativeAuthenticate")
    if isinstance(spec, Mapping):
        body = spec
    if "saslStart" in body:
        return _sasl_user(body.get("mechanism"), body.get("payload"))
    if "authenticate" in body:
        user = body.get("user")
        return user[:MAX_USER] if isinstance(user, str) and user else None
    return None


def _sasl_user(mechanism: Any, payload: Any) -> str | None:
    if not isinstance(payload, bytes | bytearray | memoryview):
        return None
    data = bytes(payload)
    if mechanism in _SCRAM:
        return scram_user(data)
    if mechanism == "PLAIN":
        return plain_user(data)
    return None


def scram_user(client_first: bytes) -> str | None:
    """``n=`` of a SCRAM client-first message: ``gs2-header`` then ``n=user,r=nonce``."""
    try:
        text = client_first.decode("utf-8")
    except UnicodeDecodeError:
        return None
    parts = text.split(",")
    if len(parts) < 4 or parts[0][:1] not in ("n", "y", "p"):
        return None
    bare = parts[2:]  # after "gs2-cbind-flag" and "[authzid]"
    if not bare[0].startswith("n="):
        return None
    user = bare[0][2:].replace("=2C", ",").replace("=3D", "=")
    return user[:MAX_USER] or None


def plain_user(message: bytes) -> str | None:
    """The authcid of ``[authzid] NUL authcid NUL passwd``; the password is not kept."""
    parts = message.split(b"\0")
    if len(parts) != 3:
        return None
    try:
        user = parts[1].decode("utf-8")
    except UnicodeDecodeError:
        return None
    return user[:MAX_USER] or None
