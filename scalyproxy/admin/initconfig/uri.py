"""The ``--from`` URI as ``upstream:`` may show it: no credentials, no secret options. Pure.

The proxy does not authenticate to the upstream (clients do, end to end), so
``upstream:`` needs the hosts and the TLS options only. User name and
password, the database path and every other option are dropped (named, never
their values: ``authMechanismProperties`` may hold a token); of the TLS options
``tlsCertificateKeyFilePassword`` is dropped too.
"""

from __future__ import annotations

from collections.abc import Iterable

_SECRET_OPTIONS = frozenset({"tlscertificatekeyfilepassword"})


def public_uri(uri: str) -> tuple[str, tuple[str, ...]]:
    """(the URI without credentials and non-TLS options, notes on what was removed)."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in ("mongodb", "mongodb+srv"):
        raise ValueError("the URI must start with mongodb:// or mongodb+srv://")
    authority, _, tail = rest.partition("/")
    authority, _, query_only = authority.partition("?")  # pymongo wants a "/" before options; be lenient
    userinfo, at, hosts = authority.rpartition("@")
    path, _, query = tail.partition("?")
    notes: list[str] = []
    if at:
        notes.append("credentials removed")
    if path:
        notes.append("database path removed")
    kept: list[str] = []
    dropped: list[str] = []
    for option in (query or query_only).split("&"):
        name = option.partition("=")[0]
        if not name:
            continue
        tls = name.lower().startswith(("tls", "ssl")) and name.lower() not in _SECRET_OPTIONS
        (kept if tls else dropped).append(option if tls else name)
    if dropped:
        notes.append("options removed: " + ", ".join(dropped))
    out = f"{scheme}://{hosts}" + ("/?" + "&".join(kept) if kept else "")
    return out, tuple(notes)


def resolved_upstream(public: str, nodes: Iterable[tuple[str, int]]) -> str:
    """A ``mongodb+srv://`` URI as ``mongodb://`` with the hosts the driver found (SRV implies TLS)."""
    _, _, rest = public.partition("://")
    query = rest.partition("?")[2]
    options = [o for o in query.split("&") if o]
    if not any(o.lower().startswith(("tls=", "ssl=")) for o in options):
        options.insert(0, "tls=true")
    hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in sorted(nodes))
    return f"mongodb://{hosts}/?" + "&".join(options)
