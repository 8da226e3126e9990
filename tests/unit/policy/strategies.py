"""Hypothesis strategies shared by the tests of the C checkers against the engine."""

from __future__ import annotations

import datetime
import uuid

from bson import Code, DBRef, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.binary import Binary, UuidRepresentation
from hypothesis import strategies as st

#: One BSON value of each kind a document or a filter can hold at a leaf.
scalar = st.one_of(
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**63), 2**63 - 1).map(Int64),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.booleans(),
    st.none(),
    st.just(datetime.datetime(2024, 1, 2)),
    st.just(ObjectId("5f1d2c3b4a59687766554433")),
    st.just(Decimal128("2.5")),
    st.just(Timestamp(1, 2)),
    st.just(Regex("a", "i")),
    st.just(Binary(b"\x01\x02", 0)),
    st.just(Binary.from_uuid(uuid.UUID(int=7), UuidRepresentation.STANDARD)),
    st.just(Code("f()")),
    st.just(DBRef("c", 1)),
    st.just(MinKey()),
    st.just(MaxKey()),
)
