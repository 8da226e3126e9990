"""Command line: ``scalyproxy run | check | explain | export-jsonschema | report | init-config | profile | whatif | advise``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scalyproxy",
        description="A guarding MongoDB wire-protocol proxy for sharded clusters.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the proxy")
    run.add_argument("--config", required=True, help="YAML config file")
    run.add_argument("--listen", help="HOST:PORT to listen on (overrides the config)")
    run.add_argument("--upstream", help="MongoDB URI of the mongos host(s) (overrides the config)")
    run.add_argument(
        "--embedded-backend",
        action="store_true",
        help="start the embedded default backend (FerretDB on SQLite) and use it as upstream",
    )
    run.add_argument("--data-dir", help="data directory for --embedded-backend (default: temporary)")
    run.add_argument(
        "--relay-only",
        action="store_true",
        help="forward bytes without reading them: no policy, no per-command metrics (benchmarks, bypass)",
    )
    run.add_argument(
        "--workers",
        metavar="N|auto",
        help="worker processes sharing the listen port (overrides the config's workers; auto: one per usable "
        "core; 1: one process, no supervisor)",
    )
    run.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # set by a supervisor for its workers
    run.add_argument("--worker-fd", type=int, help=argparse.SUPPRESS)

    check = sub.add_parser("check", help="validate a config file (exit 0 when valid, 1 otherwise)")
    check.add_argument("file")

    explain = sub.add_parser("explain", help="print the verdict for one command, offline")
    explain.add_argument("file", help="YAML config file")
    explain.add_argument("command_json", help="the command as MongoDB extended JSON")

    js = sub.add_parser("export-jsonschema", help="print each collection's $jsonSchema validator")
    js.add_argument("file")
    js.add_argument(
        "--create",
        action="store_true",
        help="print create commands (validator and declared default collation) for new collections instead of collMod",
    )
    report = sub.add_parser("report", help="print a running proxy's shadow-mode report (from its admin listener)")
    report.add_argument("--admin", required=True, help="admin address of the proxy, e.g. 127.0.0.1:9216 or http://host:9216")
    report.add_argument("--json", action="store_true", help="print the raw JSON instead of a table")
    init = sub.add_parser(
        "init-config",
        help="write a config (rules in warn) from a live cluster: collections, indexes, shard keys, sampled structure",
        description="Connect to a mongos (or any MongoDB-compatible server) and write a config that "
        "`scalyproxy check` accepts, every rule in warn (shadow mode), every choice explained in a comment. "
        "Exit 0 written, 1 the server could not be read, 2 bad arguments. See docs/onboarding.md.",
    )
    from scalyproxy.admin.initconfig.command import add_arguments

    add_arguments(init)
    profile = sub.add_parser("profile", help="print a running proxy's traffic profile (from its admin listener)")
    profile.add_argument("--admin", required=True, help="admin address of the proxy, e.g. 127.0.0.1:9216 or http://host:9216")
    profile.add_argument("--json", action="store_true", help="print the raw JSON instead of a table")
    whatif = sub.add_parser(
        "whatif",
        help="decide the profiled traffic again under another config and print what would change "
        "(exit 1 when something allowed or warned would be refused)",
    )
    whatif.add_argument("--config", required=True, help="the config to try (YAML)")
    whatif.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="a file written by the file sink, a saved /profile, an admin address "
                        "(http://HOST:PORT) or a mongodb://HOST/DB.COLLECTION sink; several are merged")
    whatif.add_argument("--json", action="store_true", help="print JSON instead of a table")
    adv = sub.add_parser(
        "advise",
        help="rank candidate shard keys per collection from the profiled traffic, as analyzeShardKey "
        "reports them (exit 0 advice, 1 nothing to advise on, 2 bad input); see docs/advisor.md",
    )
    adv.add_argument("sources", nargs="+", metavar="SOURCE", help="as for whatif; several are merged")
    adv.add_argument("--namespace", action="append", default=[], metavar="NS",
                     help="only this db.collection (repeatable; default: every one with reads or writes)")
    adv.add_argument("--candidate", action="append", default=[], metavar="NS=FIELD[:hashed][,FIELD...]",
                     help="a candidate key besides those found (repeatable), e.g. shop.orders=customer_id,created_at")
    adv.add_argument("--config", help="a config (YAML) whose shard keys and indexes are candidates too")
    adv.add_argument("--json", action="store_true", help="print JSON instead of text")
    sub.add_parser(
        "init-cluster",
        help="initiate a fresh sharded cluster and shard the declared collections (see --help)",
        add_help=False,
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["init-cluster"]:  # its own parser: docker-compose's init service
        from scalyproxy.cluster_init import main as init_main

        return init_main(argv[1:])
    args = _build_parser().parse_args(argv)
    if args.command == "run":
        from scalyproxy.server.main import run_from_args

        return run_from_args(args)
    if args.command == "init-config":
        from scalyproxy.admin.initconfig.command import main as init_config_main

        return init_config_main(args)
    if args.command == "report":
        from scalyproxy.admin.report_cli import main as report_main

        return report_main(args.admin, args.json)
    if args.command in ("profile", "whatif", "advise"):
        from scalyproxy.admin import profile_cli

        if args.command == "profile":
            return profile_cli.profile_main(args.admin, args.json)
        if args.command == "advise":
            return profile_cli.advise_main(args.sources, args.namespace, args.candidate, args.config, args.json)
        return profile_cli.whatif_main(args.config, args.sources, args.json)
    from scalyproxy.policy import tools

    if args.command == "check":
        return tools.check(args.file)
    if args.command == "explain":
        return tools.explain(args.file, args.command_json)
    if args.command == "export-jsonschema":
        return tools.export_jsonschema(args.file, args.create)
    return 2  # pragma: no cover - argparse enforces the choices


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
