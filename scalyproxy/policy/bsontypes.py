"""Python values (as pymongo's ``bson`` decodes them) -> MongoDB ``$type`` aliases.

``int`` vs ``long``: BSON int32 decodes to a Python ``int``, int64 to
``bson.int64.Int64``. A plain ``int`` inside the int32 range is ``int``; an
``Int64`` or an ``int`` outside the int32 range (which pymongo encodes as
int64) is ``long``. A field declared ``int`` accepts only ``int``; a field
declared ``long`` accepts ``int`` and ``long`` (an int32 fits, and drivers
send small numbers as int32); ``number`` accepts any numeric type.
"""

from __future__ import annotations

import datetime
import re
import uuid
from collections.abc import Mapping
from typing import Any, Final

from bson.binary import Binary
from bson.code import Code
from bson.datetime_ms import DatetimeMS
from bson.dbref import DBRef
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.son import SON
from bson.timestamp import Timestamp

INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1

_BY_CLASS: Final[dict[type, str]] = {
    str: "string",
    int: "int",
    bool: "bool",
    float: "double",
    dict: "object",
    SON: "object",
    DBRef: "object",
    list: "array",
    tuple: "array",
    type(None): "null",
    ObjectId: "objectId",
    datetime.datetime: "date",
    DatetimeMS: "date",
    Int64: "long",
    Decimal128: "decimal",
    Binary: "binData",
    bytes: "binData",
    uuid.UUID: "binData",
    Regex: "regex",
    re.Pattern: "regex",
    Timestamp: "timestamp",
    Code: "javascript",
    MinKey: "minKey",
    MaxKey: "maxKey",
}

#: What each declared name accepts.
ACCEPTS: Final[dict[str, frozenset[str]]] = {
    "number": frozenset({"int", "long", "double", "decimal"}),
    "long": frozenset({"int", "long"}),
}


def type_name(value: Any) -> str:
    """The ``$type`` alias of a decoded BSON value (``long`` for an int beyond int32)."""
    name = _BY_CLASS.get(value.__class__)
    if name is None:
        return _slow_type_name(value)
    if name == "int" and not INT32_MIN <= value <= INT32_MAX:
        return "long"
    return name


def _slow_type_name(value: Any) -> str:
    for cls, name in _BY_CLASS.items():
        if cls is not int and isinstance(value, cls):
            return name
    if isinstance(value, int):
        return "int" if INT32_MIN <= value <= INT32_MAX else "long"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def accepted_names(declared: tuple[str, ...], nullable: bool) -> frozenset[str]:
    """The actual type names a declared union accepts (``any`` is handled by callers)."""
    out: set[str] = set()
    for name in declared:
        out |= ACCEPTS.get(name, frozenset({name}))
    if nullable:
        out.add("null")
    return frozenset(out)


#: Classes whose every instance has the type name (``int`` is missing: it may be a long).
_EXACT_CLASSES: Final[dict[str, tuple[type, ...]]] = {
    "string": (str,),
    "double": (float,),
    "bool": (bool,),
    "null": (type(None),),
    "objectId": (ObjectId,),
    "date": (datetime.datetime,),
    "decimal": (Decimal128,),
    "timestamp": (Timestamp,),
    "object": (dict,),
    "array": (list,),
}


def fast_classes(accepted: frozenset[str]) -> frozenset[type]:
    """Python classes whose instances always have a type name in ``accepted``."""
    out: set[type] = set()
    for name in accepted:
        out.update(_EXACT_CLASSES.get(name, ()))
    if {"int", "long"} <= accepted:
        out.update((int, Int64))
    elif "long" in accepted:
        out.add(Int64)
    return frozenset(out)
