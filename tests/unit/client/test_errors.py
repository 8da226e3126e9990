"""The proxy's refusals (pymongo OperationFailure with a Scaly codeName) -> the library's exceptions."""

from __future__ import annotations

import pickle

import pytest
from pymongo.errors import OperationFailure

from scalymongo_client import errors as E
from scalyproxy.codes import CODES_BY_NAME


def failure(code_name: str, message: str = "refused") -> OperationFailure:
    details = {"ok": 0.0, "errmsg": message, "code": CODES_BY_NAME[code_name], "codeName": code_name}
    return OperationFailure(message, CODES_BY_NAME[code_name], details)


@pytest.mark.parametrize(
    ("code_name", "client_class", "server_class"),
    [
        ("ScalyGlobalQuery", E.GlobalQueryException, E.ServerGlobalQueryException),
        ("ScalyShardKeyViolation", E.ShardKeyViolation, E.ServerShardKeyViolation),
        ("ScalySchemaViolation", E.SchemaViolation, E.ServerSchemaViolation),
        ("ScalyCommandDenied", E.CommandDenied, E.ServerCommandDenied),
    ],
)
def test_server_refusals_map_by_code_name(
    code_name: str, client_class: type[E.ScalyMongoError], server_class: type[E.ServerRefusal]
) -> None:
    mapped = E.from_operation_failure(failure(code_name, "Missing fields were title."))
    assert type(mapped) is server_class
    assert isinstance(mapped, client_class) and isinstance(mapped, E.ScalyMongoError)
    assert isinstance(mapped, OperationFailure)
    assert not issubclass(client_class, OperationFailure), "client-side refusals are not server failures"
    assert str(mapped) == "Missing fields were title." == mapped.message
    assert mapped.code == CODES_BY_NAME[code_name] and mapped.code_name == code_name
    assert mapped.details is not None and mapped.details["codeName"] == code_name
    assert mapped.from_server


def test_validation_error_is_schema_violation() -> None:
    assert E.ValidationError is E.SchemaViolation
    assert E.from_operation_failure(failure("ScalySchemaViolation", "a: expected int, got string")).errors == (  # type: ignore[attr-defined]
        "a: expected int, got string",
    )


def test_other_scaly_codes_are_a_server_refusal() -> None:
    mapped = E.from_operation_failure(failure("ScalyProtocolError"))
    assert type(mapped) is E.ServerRefusal and mapped.code == 29005


def test_other_failures_pass_through() -> None:
    original = OperationFailure("E11000 duplicate key", 11000, {"ok": 0, "code": 11000, "codeName": "DuplicateKey"})
    assert E.from_operation_failure(original) is original
    no_details = OperationFailure("x", 2)
    assert E.from_operation_failure(no_details) is no_details


def test_code_without_code_name_still_maps() -> None:
    mapped = E.from_operation_failure(OperationFailure("refused", 29001, {"ok": 0, "errmsg": "refused", "code": 29001}))
    assert type(mapped) is E.ServerGlobalQueryException and mapped.code_name == "ScalyGlobalQuery"


def test_mapped_server_errors_chains_the_original() -> None:
    original = failure("ScalyCommandDenied", "command drop is denied")
    with pytest.raises(E.CommandDenied) as raised:
        with E.mapped_server_errors():
            raise original
    assert raised.value.__cause__ is original
    with pytest.raises(OperationFailure) as untouched:
        with E.mapped_server_errors():
            raise OperationFailure("other", 1)
    assert type(untouched.value) is OperationFailure


def test_server_refusals_pickle() -> None:
    mapped = E.from_operation_failure(failure("ScalyGlobalQuery", "msg"))
    again = pickle.loads(pickle.dumps(mapped))
    assert type(again) is E.ServerGlobalQueryException and str(again) == "msg" and again.code == 29001
