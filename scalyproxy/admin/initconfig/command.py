"""``scalyproxy init-config``: read a live server, write a config. Exit 0 written, 1 the
server could not be read (or the file written), 2 bad arguments (URI, ``--shard-key``,
``--sample``, patterns that match nothing).

Progress goes to stderr, one line per collection; the YAML to stdout or, with
``-o``, to a temporary file in the same folder renamed over the target: never a
half-written file. Before anything is written the text is loaded by the config
loader and its structures compared with the inferred ones.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from scalyproxy.admin.initconfig.indexes import ShardKeyError, ShardKeySpec
from scalyproxy.admin.initconfig.infer import count
from scalyproxy.admin.initconfig.model import CollectionPlan, ConfigPlan, normalized
from scalyproxy.admin.initconfig.plan import CollectionInput, plan_collection, sample_note, selected
from scalyproxy.admin.initconfig.render import render
from scalyproxy.admin.initconfig.source import BadSource, Cluster, Listed, Sampled, SourceError
from scalyproxy.admin.initconfig.uri import public_uri, resolved_upstream

DEFAULT_SAMPLE = 1000
DEFAULT_TIMEOUT_S = 10.0


class UsageError(Exception):
    """Bad arguments: exit status 2."""


class GenerationError(SourceError):
    """The generated text failed its own check (a bug): nothing is written, exit status 1."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="source", required=True, metavar="URI",
                   help="MongoDB URI of the mongos (or any MongoDB-compatible server) to read")
    p.add_argument("--sample", type=int, default=DEFAULT_SAMPLE, metavar="N",
                   help=f"documents sampled per collection (default {DEFAULT_SAMPLE})")
    p.add_argument("--include", action="extend", nargs="+", default=[], metavar="PATTERN",
                   help="only namespaces matching a shell glob on db.collection (default: all)")
    p.add_argument("--exclude", action="extend", nargs="+", default=[], metavar="PATTERN",
                   help="leave out namespaces matching a shell glob on db.collection (after --include)")
    p.add_argument("--shard-key", action="extend", nargs="+", default=[], metavar="NS=FIELD[:hashed],FIELD",
                   help="declare or override a shard key, e.g. blog.posts=author,title or shop.orders=customer_id:hashed")
    p.add_argument("-o", "--output", metavar="FILE", help="write here (atomically) instead of stdout")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                   help=f"seconds to wait for the server (default {DEFAULT_TIMEOUT_S:g})")


def main(args: argparse.Namespace, err: TextIO | None = None) -> int:
    from pymongo.errors import PyMongoError

    err = err or sys.stderr
    try:
        return _run(args, err)
    except UsageError as exc:
        print(f"init-config: {exc}", file=err)
        return 2
    except SourceError as exc:
        print(f"init-config: {exc}", file=err)
        return 2 if isinstance(exc, BadSource) else 1
    except PyMongoError as exc:
        print(f"init-config: lost the server while reading it (nothing written): {exc}", file=err)
        return 1
    except OSError as exc:
        print(f"init-config: cannot write {args.output}: {exc}", file=err)
        return 1


def _overrides(specs: Sequence[str]) -> dict[str, ShardKeySpec]:
    out: dict[str, ShardKeySpec] = {}
    for text in specs:
        try:
            spec = ShardKeySpec.parse(text)
        except ShardKeyError as exc:
            raise UsageError(str(exc)) from None
        if spec.namespace in out:
            raise UsageError(f"--shard-key {text!r}: {spec.namespace} is given twice")
        out[spec.namespace] = spec
    return out


def _check_args(args: argparse.Namespace) -> tuple[str, tuple[str, ...], dict[str, ShardKeySpec]]:
    if args.sample < 1:
        raise UsageError(f"--sample {args.sample}: sample at least 1 document per collection")
    if args.timeout <= 0:
        raise UsageError(f"--timeout {args.timeout:g}: a number of seconds above 0")
    try:
        public, notes = public_uri(args.source)
    except ValueError as exc:
        raise UsageError(f"bad --from URI: {exc}") from None
    return public, notes, _overrides(args.shard_key)


@dataclass
class _Run:
    """What one run read, for the header and the summary."""

    server: str = ""
    catalogue_note: str = ""
    sharded: int = 0
    skipped: tuple[str, ...] = ()


def _run(args: argparse.Namespace, err: TextIO) -> int:
    started = time.monotonic()
    public, uri_notes, overrides = _check_args(args)
    cluster = Cluster(args.source, args.timeout)
    try:
        info = _Run(server=cluster.describe_server())
        print(f"init-config: {public}: {info.server}", file=err)
        chosen = _choose(cluster.listing(), args, overrides, info)
        catalogue = _catalogue(cluster, [c.namespace for c in chosen], info)
        plans = [_collection(cluster, entry, i, len(chosen), args.sample, catalogue, overrides, err)
                 for i, entry in enumerate(chosen, 1)]
        upstream = public
        if public.startswith("mongodb+srv://"):
            upstream = resolved_upstream(public, cluster.client.nodes)
            uri_notes = (*uri_notes, f"hosts resolved from {public} (SRV): check them")
    finally:
        cluster.close()
    plan = ConfigPlan(upstream, tuple(plans), _header(args, public, info, cluster), uri_notes, info.skipped)
    text = render(plan)
    _self_check(text, plan)
    _write(text, args.output)
    _summary(plan, info, args.output, time.monotonic() - started, err)
    return 0


def _choose(listed: list[Listed], args: argparse.Namespace, overrides: dict[str, ShardKeySpec], info: _Run) -> list[Listed]:
    skipped = []
    usable = []
    for entry in listed:
        if entry.namespace.partition(".")[2].startswith("system."):
            skipped.append(f"{entry.namespace}: a system collection")
        elif entry.type == "view":
            skipped.append(f"{entry.namespace}: a view (its collection is what the proxy guards)")
        else:
            usable.append(entry)
    names = selected([e.namespace for e in usable], args.include, args.exclude)
    if not names:
        shown = ", ".join(e.namespace for e in usable[:10]) or "none"
        raise UsageError(f"no collection matched (--include {args.include or ['*']}, --exclude {args.exclude}); "
                         f"the server has {len(usable)} outside admin, config and local: {shown}")
    missing = sorted(set(overrides) - set(names))
    if missing:
        raise UsageError(f"--shard-key for {', '.join(missing)}: no such collection among those selected")
    info.skipped = tuple(skipped)
    return [e for e in usable if e.namespace in set(names)]


def _catalogue(cluster: Cluster, namespaces: list[str], info: _Run) -> dict[str, Any]:
    try:
        found = cluster.catalogue(namespaces)
    except SourceError as exc:
        info.catalogue_note = f"config.collections could not be read ({exc}): shard keys only from --shard-key"
        return {}
    info.sharded = sum(1 for ns in found if found[ns].get("key") is not None)
    info.catalogue_note = (f"shard keys: config.collections ({info.sharded} of the selected collections sharded)"
                           if found else "shard keys: config.collections has none of these collections")
    return found


def _collection(
    cluster: Cluster, entry: Listed, i: int, total: int, size: int,
    catalogue: dict[str, Any], overrides: dict[str, ShardKeySpec], err: TextIO,
) -> CollectionPlan:
    sampled = cluster.sample(entry.namespace, size)
    indexes = cluster.indexes(entry.namespace)
    shown = f"{len(indexes)} indexes" if isinstance(indexes, list) else f"indexes not read ({indexes})"
    print(f"[{i}/{total}] {entry.namespace}: {_progress(sampled)}, {shown}", file=err, flush=True)
    if sampled.stats is None:
        note = f"the sample could not be read: {sampled.error}"
    elif not sampled.stats.docs:
        note = "no documents to sample"
    else:
        note = sample_note(sampled.stats.docs, sampled.estimated, sampled.method)
    if isinstance(indexes, str):
        note += f"; the indexes could not be read: {indexes}"
        indexes = []
    data = CollectionInput(entry.namespace, entry.options, sampled.stats, note, indexes,
                           catalogue.get(entry.namespace), overrides.get(entry.namespace), entry.type)
    try:
        return plan_collection(data)
    except ShardKeyError as exc:
        raise UsageError(str(exc)) from None


def _progress(s: Sampled) -> str:
    if s.stats is None:
        return f"not sampled ({s.error})"
    if not s.stats.docs:
        return "empty"
    total = f" of ~{count(s.estimated)}" if s.estimated is not None else ""
    return f"sampled {count(s.stats.docs)}{total} with {s.method} in {s.seconds:.2f}s"


def _header(args: argparse.Namespace, public: str, info: _Run, cluster: Cluster) -> tuple[str, ...]:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    command = ["scalyproxy", "init-config", "--from", public, "--sample", str(args.sample)]
    for flag, values in (("--include", args.include), ("--exclude", args.exclude), ("--shard-key", args.shard_key)):
        if values:
            command += [flag, *values]
    how = "$sample" if cluster.sample_supported is not False else (
        f"find, in natural order (the server has no $sample: {cluster.sample_refusal})")
    return (
        f"Generated by scalyproxy init-config at {now}: review it before deploying it (docs/onboarding.md).",
        f"Source: {public} ({info.server})",
        "Command: " + shlex.join(command),
        f"Sample: up to {count(args.sample)} documents per collection with {how}",
        info.catalogue_note.capitalize() if info.catalogue_note else "",
        "Every rule is in warn (shadow mode): this file refuses nothing. The comment beside a line says why it is so.",
    )


def _self_check(text: str, plan: ConfigPlan) -> None:
    """The loader must accept the text and read back the inferred structures (a bug otherwise)."""
    from scalyproxy.config import ConfigError, load_config_text

    try:
        cfg = load_config_text(text, "<init-config output>")
    except ConfigError as exc:
        raise GenerationError(f"internal error: the generated config does not load (nothing written):\n{exc}") from None
    for coll in plan.collections:
        loaded = cfg.collections[coll.namespace].structure
        if (loaded is None) != (coll.structure is None) or (
            loaded is not None and coll.structure is not None and normalized(loaded) != normalized(coll.structure.to_spec())
        ):
            raise GenerationError(f"internal error: {coll.namespace}: the written structure reads back differently (nothing written)")


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode(target))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _mode(target: Path) -> int:
    try:
        return target.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _write(text: str, output: str | None) -> None:
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_atomic(output, text)


def _summary(plan: ConfigPlan, info: _Run, output: str | None, seconds: float, err: TextIO) -> None:
    colls = plan.collections
    sharded = sum(1 for c in colls if any(ix.shard_key for ix in c.indexes))
    structured = sum(1 for c in colls if c.structure is not None)
    skipped_ix = sum(len(c.skipped_indexes) for c in colls)
    where = output or "stdout"
    print(f"init-config: {len(colls)} collections ({sharded} with a shard key, {structured} with a structure), "
          f"{len(info.skipped)} views/system collections left out, {skipped_ix} indexes skipped (see the comments); "
          f"wrote {where} in {seconds:.1f}s. Next: scalyproxy check {output or 'FILE'}", file=err)
