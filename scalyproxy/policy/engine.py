"""The policy engine: one command in, one verdict out. Pure; never raises."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar, Final

from scalyproxy import codes
from scalyproxy.config.model import ProxyConfig
from scalyproxy.policy.commands import SEQUENCE_FIELDS, canonical, is_write, namespace_of
from scalyproxy.policy.compiled import CompiledCollection
from scalyproxy.policy.decision import Checks, Decision, Stop, internal_refusal
from scalyproxy.policy.fastpath import Entry, build_table
from scalyproxy.policy.handlers import HANDLERS
from scalyproxy.policy.model import CommandLike, Finding, Verdict, WithSequences
from scalyproxy.wire.ambiguous import AmbiguousRead

try:
    from scalyproxy._scan import shape_key
except ImportError:  # the pure-Python install: no verdict is cached by shape
    shape_key = None  # type: ignore[assignment]

_VERDICT_CACHE_SIZE: Final = 4096
_SHAPE_CACHE_SIZE: Final = 4096
_NONE: Final[frozenset[str]] = frozenset()

#: Commands whose verdicts :meth:`Engine.decide_message` caches by shape: reads with neither
#: statements nor document runs, whose findings say nothing a skeleton does not keep (the
#: messages of writes name the statement or document they are about, which a skeleton groups).
#: tests/property/test_shape_cache.py proves, on generated commands and configs, that a command
#: gets from the cache exactly the verdict (findings, messages and shapes included) it gets
#: from decide().
SHAPE_CACHED: Final = frozenset({"find", "count", "distinct", "aggregate"})


class Engine(Checks):
    """A config compiled once into fast lookups; :meth:`decide` is pure and never raises."""

    ALLOW_ALL: ClassVar[Engine]

    def __init__(self, cfg: ProxyConfig, *, allow_all: bool = False) -> None:
        super().__init__(cfg)
        self._allow_all = allow_all
        self._cache: dict[tuple[str, tuple[str, ...], bool], Verdict] = {}
        # verdicts of the SHAPE_CACHED commands by their keyed shape id (decide_message); the key
        # is this engine's own secret, so no client can aim a shape at another's verdict
        self._shaped: dict[int, Verdict] = {}
        self._secret = os.urandom(16)
        self._shape_marker = cfg.policy.allow_marker.encode()
        #: what _scan.fast_decide reads to allow the common targeted commands on their bytes
        #: (scalyproxy.policy.fastpath); empty when everything goes through decide()
        self.fast: dict[str, Entry] = (
            {} if allow_all else build_table(self._collections, self._deny, self._read_only, self._allowed)
        )

    @classmethod
    def from_config(cls, cfg: ProxyConfig) -> Engine:
        return cls(cfg)

    def collection(self, namespace: str) -> CompiledCollection | None:
        return self._collections.get(namespace)

    def validate_document(self, namespace: str, doc: Mapping[str, Any]) -> list[str]:
        """Schema messages for one document of ``namespace`` (``[]`` when valid or undeclared)."""
        cc = self._collections.get(namespace)
        return [] if cc is None else cc.document_errors(doc)

    def decide(self, cmd: CommandLike) -> Verdict:
        try:
            name, db, body = cmd.name, cmd.db, cmd.body
            command = canonical(name)
            decision = Decision(self, command, body)
        except Exception as exc:  # a command object that cannot even be read
            return internal_refusal(f"cannot read the command: {exc!r}", "<unknown>")
        try:
            self._decide(decision, cmd, command, db, body)
        except Stop:
            pass
        except AmbiguousRead as exc:  # a rule read a repeated key or a string that is not UTF-8
            decision.ambiguous(exc)
        except Exception as exc:  # fail closed: a bug or odd input never goes through unchecked
            decision.refusal = Finding(
                "malformed",
                codes.UNSUPPORTED_OPERATION,
                codes.CODE_NAMES[codes.UNSUPPORTED_OPERATION],
                f"the proxy could not check this {command} command ({type(exc).__name__}: {exc})",
                decision.namespaces[0] if decision.namespaces else None,
                command,
                None,
            )
        return self._verdict(decision)

    def decide_message(self, cmd: CommandLike, data: Any) -> Verdict:
        """:meth:`decide` for a command read from the OP_MSG bytes ``data``: a find, count,
        distinct or aggregate (:data:`SHAPE_CACHED`) whose shape was decided before gets that
        verdict again without being decided afresh.

        The shape is the command's skeleton (:mod:`scalyproxy.evidence.skeleton`: the command
        with its values replaced by their types and, where the policy compares values, their
        ranks), identified by ``_scan.shape_key``: the skeleton's hash under SipHash with this
        engine's random key, so that a client who knows the code still cannot make a refused
        shape collide with an allowed one. Commands whose skeleton the C code leaves to Python (a
        repeated key, a string that is not UTF-8, ``$expr``...) are decided every time. The
        cache lives as long as the engine, i.e. until the config is reloaded, and is bounded.
        """
        if shape_key is None or cmd.name not in SHAPE_CACHED or self._allow_all:
            return self.decide(cmd)
        key = shape_key(data, self._shape_marker, self._secret)
        if key is None:
            return self.decide(cmd)
        verdict = self._shaped.get(key)
        if verdict is None:
            verdict = self.decide(cmd)
            if len(self._shaped) < _SHAPE_CACHE_SIZE:
                self._shaped[key] = verdict
        return verdict

    def _decide(self, d: Decision, cmd: CommandLike, command: str, db: str, body: Mapping[str, Any]) -> None:
        if self._allow_all:
            ns = namespace_of(command, db, body)
            if ns is not None:
                d.namespaces.append(ns)
            return
        expected = SEQUENCE_FIELDS.get(command, _NONE)
        unexpected = [n for n in cmd.sequences if n not in expected]
        if unexpected:
            # read as the server would if it took them: fields of the body
            body = WithSequences(body, cmd.sequences, unexpected)
        if command in self._deny:
            message = f"command {command} is denied by the proxy policy (policy.deny_commands)"
            d.report("deny_commands", "enforce", codes.COMMAND_DENIED, message, namespace_of(command, db, body))
        if self._read_only and is_write(command, body):
            message = f"command {command} is refused: the proxy is read-only (read_only: true)"
            d.report("read_only", "enforce", codes.COMMAND_DENIED, message, namespace_of(command, db, body))
        handler = HANDLERS.get(command)
        if handler is not None:
            handler(self, d, db, body, cmd)
        else:
            self.generic(d, command, db, body)
        if unexpected and self.governs(d):  # a sequence the policy did not check could carry a write
            message = (
                f"command {command} does not take a document sequence named {unexpected[0]!r} "
                f"(allowed: {', '.join(sorted(expected)) or 'none'})"
            )
            d.malformed(message, namespace_of(command, db, body))

    def _verdict(self, d: Decision) -> Verdict:
        namespaces = tuple(d.namespaces)
        if d.refusal is None and not d.warnings:
            return self._allowed_verdict(d.command, namespaces, d.marker_used)
        return Verdict(d.refusal, tuple(d.warnings), namespaces, d.command, d.marker_used)

    def _allowed_verdict(self, command: str, namespaces: tuple[str, ...], marker_used: bool) -> Verdict:
        key = (command, namespaces, marker_used)
        verdict = self._cache.get(key)
        if verdict is None:
            verdict = Verdict(None, (), namespaces, command, marker_used)
            if len(self._cache) < _VERDICT_CACHE_SIZE:
                self._cache[key] = verdict
        return verdict

    def _allowed(self, command: str, namespace: str) -> Verdict:
        """The allowed verdict of a fast-path slot: always cached (the table holds a bounded
        number of them, one per slot), so that decide() returns this very object too."""
        key = (command, (namespace,), False)
        verdict = self._cache.get(key)
        if verdict is None:
            verdict = self._cache[key] = Verdict(None, (), (namespace,), command, False)
        return verdict


Engine.ALLOW_ALL = Engine(ProxyConfig(), allow_all=True)
