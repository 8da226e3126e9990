"""Fuzz targets, as plain functions of one ``bytes`` input (no atheris import).

The atheris entry points (``fuzz_codec.py``, ``fuzz_relay.py``) call these; so
does ``test_fuzz_targets.py``, on the seed corpus and every saved crasher, so a
crash found once stays a regression test.

``codec_target``: the input is cut into chunks (size chosen by its first byte)
and fed to a Framer; every frame goes through ``command_view`` and the strict
decoders. Allowed outcomes: a result, or ``ProtocolError``; anything else
escapes as a crash. Checked on the way: framing is independent of the chunking,
the frames are exactly the consumed input, and every accepted message
re-encodes byte-identical (see :func:`reencode`).

Also differential, for every OP_MSG frame: the C view (``scalyproxy._scan``)
and the pure-Python view accept and refuse the same messages and read the same
command (the same LenientDocuments, doubts included, where a part is in doubt),
the C scanner judges the body and every kind-1 document as pymongo's strict
decoder plus the Python duplicate-key walker do, and a body is decoded as a
LenientDocument exactly when the scanner does not prove it clean.

``relay_target``: the input is ``[chunk size][3-byte client length][client
bytes][upstream bytes]``; the client bytes go into a :class:`MemoryRelay` one
chunk at a time, interleaved with the upstream bytes. Checked: no exception
leaves the relay, no ``internal_error`` is logged, everything forwarded upstream
is a whole client frame the guard allows (never a refused or undecodable one),
and every message the client receives is either a whole upstream message or an
error reply made by the proxy for one of the client's request ids.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import bson

from scalyproxy.config import load_config_text
from scalyproxy.policy import Engine
from scalyproxy.wire import (
    OP_COMPRESSED,
    OP_MSG,
    OP_QUERY,
    OP_REPLY,
    Framer,
    ProtocolError,
    command_view,
    compress_message,
    decode_op_msg,
    decode_op_query,
    decode_reply_body,
    decompress_message,
    encode_document,
    encode_op_query,
    make_frame,
)
from scalyproxy.wire import ambiguous as ambiguous_module
from scalyproxy.wire import command as command_module
from scalyproxy.wire import documents as documents_module
from scalyproxy.wire.ambiguous import KEY_DOUBTS, LenientDocument, has_doubt
from scalyproxy.wire.documents import DECODE_OPTIONS, decode_document, find_duplicate_key
from scalyproxy.wire.op_msg import assemble_op_msg, encode_sequence_section, parse_op_msg
from scalyproxy.wire.op_query import parse_op_query
from tests.fuzz.memrelay import BLOG_CONFIG, LogSink, MemoryRelay, captured_logs, proxy_for

#: Small frame limit in the fuzzers: a hostile length costs a 64 KiB buffer, not 48 MB.
FUZZ_MAX = 1 << 16
MAX_SIZE = 48_000_000
HELLO_NAMES = ("hello", "ismaster")
SCALY_CODES = range(29001, 29007)


class InvariantError(AssertionError):
    """A fuzz oracle failed (distinct from a crash inside the code under test)."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise InvariantError(message)


# -- the codec ---------------------------------------------------------------------


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def frame_all(data: bytes, size: int, max_size: int = FUZZ_MAX) -> tuple[list[bytes], bool]:
    """Frames of ``data`` fed ``size`` bytes at a time; and whether framing failed."""
    framer = Framer(max_size)
    frames: list[bytes] = []
    try:
        for piece in chunks(data, size):
            framer.feed(piece)
            while (frame := framer.next_frame()) is not None:
                _check(frame.header.length == len(frame.data), "frame length != header length")
                frames.append(bytes(frame.data))
    except ProtocolError as exc:
        _check(exc.kind == "bad_length" and exc.fatal, f"framer raised {exc.kind}")
        return frames, True
    return frames, False


def codec_target(data: bytes) -> None:
    if not data:
        return
    size = 1 + data[0] % 97
    payload = data[1:]
    frames, failed = frame_all(payload, size)
    whole, whole_failed = frame_all(payload, len(payload) or 1)
    _check(frames == whole and failed == whole_failed, "framing depends on the chunking")
    consumed = b"".join(frames)
    _check(payload.startswith(consumed), "frames are not the input bytes")
    for raw in frames:
        check_message(raw)


def check_message(raw: bytes) -> None:
    """Decode one whole message every way the proxy can; re-encode what is accepted."""
    frame = make_frame(raw)
    try:
        view = command_view(frame, max_message_size=FUZZ_MAX)
    except ProtocolError:
        view = None
    if view is not None:
        _check(view.request_id == frame.header.request_id, "view request id")
        reencode(raw)
    if documents_module._scan is not None and struct.unpack_from("<i", raw, 12)[0] == OP_MSG:
        same_as_pure_python(raw, view)
        scanner_agrees(raw)
        fast_path_agrees(raw, view)
        lenient_only_in_doubt(raw, view)
    for decoder in (decode_reply_body_of, decode_op_msg, decode_op_query):
        try:
            decoder(raw)
        except ProtocolError:
            pass


#: Other policies over the corpus's namespace (blog.blog_posts), so that every fast answer a
#: mutated message reaches is compared with the engine under each rule mode and key shape: a
#: hashed key with a looser structure and rules on warn (any sort needs the index check), a
#: read-only proxy, denied commands.
FAST_PATH_CONFIGS: tuple[str, ...] = (
    """
policy:
  targeting: prefix
  rules: {unindexed_query: enforce, schema: warn, shard_key_write: warn}
collections:
  blog.blog_posts:
    structure:
      author: string
      title: string
      body: any
      unique_views: "long?"
      comments: {$array: {author: string, comment: "string?", rank: number}, $nullable: true}
    additional_fields: true
    indexes:
      - {fields: {author: hashed}, shard_key: true}
      - {fields: [unique_views]}
""",
    BLOG_CONFIG.read_text() + "\nread_only: true\n",
    BLOG_CONFIG.read_text().replace("deny_commands: []", "deny_commands: [find, update, count]"),
)
_ENGINES: list[Engine] = []


def fast_path_engines() -> list[Engine]:
    """The blog proxy's engine, then one per FAST_PATH_CONFIGS (built once)."""
    if not _ENGINES:
        _ENGINES.append(proxy_for().engine)
        _ENGINES.extend(Engine.from_config(load_config_text(text)) for text in FAST_PATH_CONFIGS)
    return _ENGINES


def fast_path_agrees(raw: bytes, view: Any, engines: list[Engine] | None = None) -> None:
    """The C fast path allows only what the engine allows, with the engine's own verdict,
    under each policy of :func:`fast_path_engines` (every command it answers)."""
    for engine in fast_path_engines() if engines is None else engines:
        allowed = documents_module._scan.fast_decide(raw, engine.fast)
        if allowed is not None:
            _check(view is not None, "the fast path allowed a message the codec refuses")
            _check(engine.decide(view) is allowed, f"the fast path and the engine disagree on {allowed.command}")


def lenient_only_in_doubt(raw: bytes, view: Any) -> None:
    """A viewed body is a LenientDocument exactly when the scanner does not prove its
    bytes clean, and then it holds a doubt; the name and $db are never in doubt."""
    if view is None:
        return
    start, stop = parse_op_msg(raw).body
    answer = documents_module._scan.scan_document(raw[start:stop])
    if isinstance(view.body, LenientDocument):
        _check(answer != "ok" and has_doubt(view.body), f"a LenientDocument for a body the scanner says {answer}")
        _check(not view.body.doubt.get(view.name, 0) & KEY_DOUBTS and "$db" not in view.body.doubt, "name or $db in doubt")
    else:
        _check(answer in ("ok", "too_deep"), f"a plain body for bytes the scanner says {answer}")


def _pure_python_view(raw: bytes) -> Any:
    """The view without the C extension (sequences read, as the C path scans them)."""
    saved = documents_module._scan, command_module._scan, ambiguous_module._scan
    documents_module._scan = command_module._scan = ambiguous_module._scan = None
    try:
        view = command_module._python_command_view(make_frame(raw), max_message_size=FUZZ_MAX)
        for name in view.sequences:
            view.sequences[name]
        return view
    except ProtocolError:
        return None
    finally:
        documents_module._scan, command_module._scan, ambiguous_module._scan = saved


def same_as_pure_python(raw: bytes, view: Any) -> None:
    pure = _pure_python_view(raw)
    _check((view is None) == (pure is None), f"C view {view!r}, pure-Python view {pure!r}")
    if view is not None and pure is not None:
        _check(
            (view.name, view.db, view.flags, list(view.sequences))
            == (pure.name, pure.db, pure.flags, list(pure.sequences))
            and _same_value(view.body, pure.body)
            and all(
                _same_value(list(view.sequences[k]), list(pure.sequences[k])) for k in view.sequences
            ),
            "C and pure-Python views differ",
        )


def scan_reference(doc: bytes) -> str:
    """What the C scanner must answer for ``doc``, from pymongo's strict decoder and
    the Python duplicate-key walker (also the oracle of tests/unit/wire/test_scan.py)."""
    try:
        bson.decode(doc, DECODE_OPTIONS)
    except Exception:
        return "invalid"
    try:
        return "duplicate" if find_duplicate_key(doc) is not None else "ok"
    except ProtocolError:
        return "invalid"


def scanner_agrees(raw: bytes) -> None:
    """The body and each kind-1 document, judged by the C scanner and by the reference."""
    scan = documents_module._scan
    assert scan is not None
    try:
        layout = parse_op_msg(raw)
    except ProtocolError:
        return
    spans = [layout.body]
    for a, b in layout.sequences.values():
        pos = a
        while pos + 4 <= b:
            size = struct.unpack_from("<i", raw, pos)[0]
            if size < 5 or pos + size > b:
                break
            spans.append((pos, pos + size))
            pos += size
    for a, b in spans:
        doc = raw[a:b]
        got, want = scan.scan_document(doc), scan_reference(doc)
        if got == "too_deep" or "ok" not in (got, want):
            continue
        _check(got == want, f"scanner says {got}, pymongo and the walker {want}: {doc.hex()}")


def decode_reply_body_of(raw: bytes) -> Any:
    return decode_reply_body(make_frame(raw), max_message_size=FUZZ_MAX)


def reencode(raw: bytes) -> None:
    """An accepted message, rebuilt from what the decoder read, is the same bytes.

    Documents are compared byte for byte when they are canonical BSON (their own
    re-encoding is identical); a legal non-canonical one (deprecated types,
    array keys other than 0, 1, ..., a NaN payload) must at least reach a fixed
    point: re-encoding its decoded form twice gives the same bytes.
    """
    op_code = struct.unpack_from("<i", raw, 12)[0]
    if op_code == OP_COMPRESSED:
        inner = decompress_message(raw, FUZZ_MAX)
        _check(inner[4:12] == raw[4:12], "OP_COMPRESSED ids not kept")
        compressor = raw[24]
        if compressor:
            again = decompress_message(compress_message(inner, compressor), FUZZ_MAX)
            _check(again == inner, "compress/decompress round trip")
        reencode(inner)
        return
    if op_code == OP_MSG:
        _check(_rebuild_op_msg(raw) == raw, "OP_MSG does not re-encode byte-identical")
    elif op_code == OP_QUERY:
        _check(_rebuild_op_query(raw) == raw, "OP_QUERY does not re-encode byte-identical")


def _canonical(raw: bytes) -> bytes:
    """The document as the decoder reads it, re-encoded (checked to be a fixed point)."""
    once = encode_document(decode_document(raw))
    _check(encode_document(decode_document(once)) == once, "re-encoding is not a fixed point")
    return raw if once == raw else once


def _rebuild_op_msg(raw: bytes) -> bytes:
    layout = parse_op_msg(raw)
    try:
        decode_op_msg(raw)
    except ProtocolError:
        # command_view decodes kind-1 sequences lazily (only when the guard reads
        # them); one that does not decode cannot be rebuilt, and is not compared
        return raw
    parts: list[bytes] = []
    for start, stop in layout.sections:
        if raw[start] == 0:
            parts += [b"\x00", _canonical(raw[start + 1 : stop])]
            continue
        name = next(n for n, (a, b) in layout.sequences.items() if b == stop)
        a, b = layout.sequences[name]
        docs, pos = [], a
        while pos < b:
            size = struct.unpack_from("<i", raw, pos)[0]
            docs.append(_canonical(raw[pos : pos + size]))
            pos += size
        parts.append(encode_sequence_section(name, docs))
    request_id, response_to = struct.unpack_from("<ii", raw, 4)
    rebuilt = assemble_op_msg(layout.flags, b"".join(parts), request_id, response_to, layout.checksum)
    return raw if _same_but_canonicalised(raw, rebuilt) else rebuilt


def _same_but_canonicalised(raw: bytes, rebuilt: bytes) -> bool:
    """A rebuilt message may differ only where a non-canonical document was normalised
    (its length may then change too): re-decoding both must give equal documents."""
    if rebuilt == raw:
        return True
    try:
        a, b = decode_op_msg(raw), decode_op_msg(rebuilt)
    except ProtocolError:
        return False
    return (
        a.flags == b.flags
        and list(a.sequences) == list(b.sequences)
        and _same_value(a.body, b.body)
        and all(_same_value(a.sequences[k], b.sequences[k]) for k in a.sequences)
    )


def _same_value(a: Any, b: Any) -> bool:
    """Equality that treats NaN as equal to NaN (the one value that is not equal to itself)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, LenientDocument) or isinstance(b, LenientDocument):
        return (
            type(a) is type(b)
            and dict(a.doubt) == dict(b.doubt)
            and _same_value(dict(a.unchecked()), dict(b.unchecked()))
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same_value(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) and type(a) is type(b)


def _rebuild_op_query(raw: bytes) -> bytes:
    layout = parse_op_query(raw)
    query = decode_op_query(raw)
    request_id, response_to = struct.unpack_from("<ii", raw, 4)
    rebuilt = encode_op_query(
        layout.namespace,
        query.query,
        request_id=request_id,
        response_to=response_to,
        flags=layout.flags,
        number_to_skip=layout.number_to_skip,
        number_to_return=layout.number_to_return,
        selector=query.selector,
    )
    if rebuilt == raw:
        return raw
    # a non-canonical query document: the rebuilt one must read the same
    again = decode_op_query(rebuilt)
    same = _same_value(again.query, query.query) and _same_value(again.selector, query.selector)
    return raw if same and again.namespace == layout.namespace else rebuilt


# -- the relay -----------------------------------------------------------------------

_LOG = LogSink()
#: How the relay fuzzer cuts both streams (the first input byte picks one).
CHUNK_SIZES = (1, 2, 3, 5, 7, 16, 17, 21, 64, 100, 500, 4096, 65536)


def split_relay_input(data: bytes) -> tuple[int, bytes, bytes]:
    """(chunk size, client bytes, upstream bytes) of a relay fuzz input."""
    if len(data) < 4:
        return 1, data, b""
    size = CHUNK_SIZES[data[0] % len(CHUNK_SIZES)]
    n = int.from_bytes(data[1:4], "little")
    body = data[4:]
    return size, body[:n], body[n:]


def pack_relay_input(size: int, client: bytes, upstream: bytes) -> bytes:
    index = CHUNK_SIZES.index(size)
    return bytes([index]) + len(client).to_bytes(3, "little") + client + upstream


def relay_target(data: bytes) -> None:
    size, client, upstream = split_relay_input(data)
    _LOG.seek(0)
    _LOG.truncate()
    with captured_logs(_LOG):
        relay = run_relay(size, client, upstream)
    _check(not any(e["event"] == "internal_error" for e in _LOG.events()), _LOG.getvalue()[:500])
    check_forwarded(client, relay.to_upstream, relay)
    check_to_client(client, upstream, relay.to_client)


def run_relay(size: int, client: bytes, upstream: bytes) -> MemoryRelay:
    """Feed both streams, ``size`` bytes at a time, alternating client and upstream chunks."""
    relay = MemoryRelay()
    conn = relay.conn
    conn.framer.max_message_size = conn.tracker.max_size = FUZZ_MAX
    up_chunks = chunks(upstream, size)
    client_chunks = chunks(client, size)
    for i in range(max(len(client_chunks), len(up_chunks))):
        if i < len(client_chunks):
            relay.from_client(client_chunks[i])
        if i < len(up_chunks):
            relay.from_upstream(up_chunks[i])
            # the upstream's hello may raise the limit (it is trusted to state its
            # own); the fuzzer keeps it small so a hostile length costs little
            conn.framer.max_message_size = min(conn.framer.max_message_size, FUZZ_MAX)
    return relay


def split_frames(data: bytes, max_size: int) -> tuple[list[bytes], int]:
    """Whole messages at the start of ``data`` (the oracle's own walk, allocating
    nothing from a length) and how many bytes they cover."""
    frames: list[bytes] = []
    pos = 0
    while len(data) - pos >= 16:
        n = struct.unpack_from("<i", data, pos)[0]
        if n < 16 or n > max_size or pos + n > len(data):
            break
        frames.append(data[pos : pos + n])
        pos += n
    return frames, pos


def check_forwarded(client: bytes, forwarded: bytes, relay: MemoryRelay) -> None:
    """What went upstream: whole client frames, in order, each decodable and allowed."""
    sent, _ = split_frames(client, FUZZ_MAX)
    out, covered = split_frames(forwarded, FUZZ_MAX)
    _check(covered == len(forwarded), "partial frame forwarded upstream")
    pos = 0
    for raw in out:
        view = command_view(make_frame(raw))  # a ProtocolError here is a fail-open bug
        if view.name.lower() in HELLO_NAMES:
            continue  # may be the rewritten hello (compression list restricted)
        while pos < len(sent) and sent[pos] != raw:
            pos += 1
        _check(pos < len(sent), "forwarded bytes are not a client frame")
        pos += 1
        verdict = relay.proxy.engine.decide(view)
        _check(verdict.refusal is None, f"a refused command went upstream: {verdict.refusal}")


def check_to_client(client: bytes, upstream: bytes, received: bytes) -> None:
    """What the client got: upstream messages in order (a reply to a moreToCome
    request may be left out), and proxy error replies to the client's request ids."""
    up_frames, _ = split_frames(upstream, MAX_SIZE)
    requests = {struct.unpack_from("<i", f, 4)[0] for f in split_frames(client, FUZZ_MAX)[0]}
    got, _ = split_frames(received, MAX_SIZE)
    pos = 0
    for raw in got:
        try:
            pos = up_frames.index(raw, pos) + 1
        except ValueError:
            _check(_is_proxy_error(raw, requests), "the client got a message nobody sent it")


def _is_proxy_error(raw: bytes, requests: set[int]) -> bool:
    header = struct.unpack_from("<iiii", raw)
    if header[3] not in (OP_MSG, OP_REPLY) or header[2] not in requests:
        return False
    try:
        body = decode_reply_body(make_frame(raw))
    except ProtocolError:
        return False
    return body.get("ok") == 0 and body.get("code") in SCALY_CODES
