"""The sans-IO MongoDB wire codec: bytes in, frames and command views out,
reply bytes back. No socket, no asyncio (a test checks). See docs/wire.md.

Layers: ``framer`` (bytes -> Frame) -> ``op_msg`` / ``op_query`` /
``op_compressed`` (frame layouts, strict decoding, encoders) -> ``command``
(the CommandView the policy engine reads) -> ``replies`` (what the proxy sends).
"""

from scalyproxy.wire.command import CommandView, LazySequences, command_view
from scalyproxy.wire.documents import decode_document, decode_sequence, encode_document
from scalyproxy.wire.errors import ProtocolError
from scalyproxy.wire.framer import Frame, Framer, make_frame
from scalyproxy.wire.header import (
    DEFAULT_MAX_MESSAGE_SIZE,
    OP_COMPRESSED,
    OP_DELETE,
    OP_GET_MORE,
    OP_INSERT,
    OP_KILL_CURSORS,
    OP_MSG,
    OP_QUERY,
    OP_REPLY,
    OP_UPDATE,
    Header,
    parse_header,
)
from scalyproxy.wire.op_compressed import (
    SUPPORTED_COMPRESSORS,
    compress_message,
    decompress_message,
    may_compress,
)
from scalyproxy.wire.op_msg import OpMsg, decode_op_msg, encode_op_msg
from scalyproxy.wire.op_query import (
    OpQuery,
    OpReply,
    decode_op_query,
    decode_op_reply,
    encode_op_query,
    encode_op_reply,
    parse_op_reply,
)
from scalyproxy.wire.replies import decode_reply_body, error_reply, rewrite_command

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "OP_COMPRESSED",
    "OP_DELETE",
    "OP_GET_MORE",
    "OP_INSERT",
    "OP_KILL_CURSORS",
    "OP_MSG",
    "OP_QUERY",
    "OP_REPLY",
    "OP_UPDATE",
    "SUPPORTED_COMPRESSORS",
    "CommandView",
    "Frame",
    "Framer",
    "Header",
    "LazySequences",
    "OpMsg",
    "OpQuery",
    "OpReply",
    "ProtocolError",
    "command_view",
    "compress_message",
    "decode_document",
    "decode_op_msg",
    "decode_op_query",
    "decode_op_reply",
    "decode_reply_body",
    "decode_sequence",
    "decompress_message",
    "encode_document",
    "encode_op_msg",
    "encode_op_query",
    "encode_op_reply",
    "error_reply",
    "make_frame",
    "may_compress",
    "parse_header",
    "parse_op_reply",
    "rewrite_command",
]
