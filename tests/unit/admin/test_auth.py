"""User names from authentication commands; payloads never come back."""

from __future__ import annotations

from bson.binary import Binary

from scalyproxy.admin.auth import MAX_USER, plain_user, scram_user, user_of


def test_scram_client_first() -> None:
    assert scram_user(b"n,,n=alice,r=fyko+d2lbbFgONRv9qkxdawL") == "alice"
    assert scram_user(b"y,,n=bob,r=abc") == "bob"
    assert scram_user(b"p=tls-unique,a=admin,n=carol,r=abc") == "carol"
    assert scram_user(b"n,,n=a=2Cb=3Dc,r=abc") == "a,b=c"


def test_bad_scram_messages() -> None:
    assert scram_user(b"") is None
    assert scram_user(b"n,,r=abc") is None
    assert scram_user(b"x,,n=alice,r=abc") is None
    assert scram_user(b"\xff\xfe") is None
    assert scram_user(b"n,,n=,r=abc") is None
    assert scram_user(b"n,,n=" + b"u" * 1000 + b",r=abc") == "u" * MAX_USER


def test_plain() -> None:
    assert plain_user(b"\x00dave\x00secret") == "dave"
    assert plain_user(b"admin\x00dave\x00secret") == "dave"
    assert plain_user(b"dave") is None


def test_user_of_commands() -> None:
    sasl = {"saslStart": 1, "mechanism": "SCRAM-SHA-256", "payload": Binary(b"n,,n=erin,r=x"), "$db": "admin"}
    assert user_of(sasl) == "erin"
    hello = {"hello": 1, "speculativeAuthenticate": {**sasl, "db": "admin"}}
    assert user_of(hello) == "erin"
    plain = {"saslStart": 1, "mechanism": "PLAIN", "payload": b"\x00frank\x00pw"}
    assert user_of(plain) == "frank"
    x509 = {"authenticate": 1, "mechanism": "MONGODB-X509", "user": "CN=client,O=acme"}
    assert user_of(x509) == "CN=client,O=acme"
    assert user_of({"authenticate": 1, "mechanism": "MONGODB-X509"}) is None
    assert user_of({"saslStart": 1, "mechanism": "MONGODB-AWS", "payload": b"\x05\x00\x00\x00\x00"}) is None
    assert user_of({"saslStart": 1, "mechanism": "SCRAM-SHA-1", "payload": "not bytes"}) is None
    assert user_of({"find": "c"}) is None
