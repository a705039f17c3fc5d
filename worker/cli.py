"""The `incident-worker` command line: serve, simulate, lint, db upgrade (and more as the product grows)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from worker.classify.config import CONFIG_FILES, load_catalog, load_config_file
from worker.classify.routing import route
from worker.classify.severity import classify
from worker.domain.clock import utcnow
from worker.domain.events import SOURCES
from worker.errors import ConfigError, Problem, WebhookRejected
from worker.settings import Settings
from worker.sources.registry import build_sources
from worker.store import migrate
from worker.store.db import make_engine


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="incident-worker", description=__doc__)
    sub = parser.add_subparsers(metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the webhook receiver, API and background processing")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--config", type=Path, default=Path("config"), help="config directory")
    serve.add_argument("--playbooks", type=Path, default=Path("playbooks"), help="playbook directory")
    serve.add_argument("--workers", type=int, default=1, help="gunicorn worker processes")
    serve.add_argument("--threads", type=int, default=16, help="threads per worker")
    serve.set_defaults(handler=_serve)

    simulate = sub.add_parser("simulate", help="classify one webhook body; no side effects, no network")
    simulate.add_argument("file", type=Path)
    simulate.add_argument("--source", required=True, choices=SOURCES)
    simulate.add_argument("--config", type=Path, default=Path("config"))
    simulate.add_argument("--playbooks", type=Path, default=Path("playbooks"))
    simulate.set_defaults(handler=_simulate)

    lint = sub.add_parser("lint", help="validate config and playbooks; path:line:col: message per problem")
    lint.add_argument("paths", nargs="*", type=Path)
    lint.add_argument("--format", choices=["text", "json"], default="text")
    lint.set_defaults(handler=_lint)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(metavar="ACTION")
    upgrade = db_sub.add_parser("upgrade", help="apply migrations")
    upgrade.set_defaults(handler=_db_upgrade)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    if getattr(args, "config", None) is not None:
        overrides["config_dir"] = args.config
    if getattr(args, "playbooks", None) is not None:
        overrides["playbooks_dir"] = args.playbooks
    return Settings.from_env(**overrides)


def _serve(args: argparse.Namespace) -> int:
    from worker.http.server import serve  # gunicorn is only needed by this verb

    settings = _settings(args)
    load_catalog(settings.config_dir)  # refuse to start on a bad config, with the lint messages
    migrate.upgrade(make_engine(settings.database_url))
    serve(settings, host=args.host, port=args.port, workers=args.workers, threads=args.threads)
    return 0


def _simulate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    catalog = load_catalog(settings.config_dir)
    source = build_sources(settings)[args.source]
    try:
        body = args.file.read_bytes()
        delivery = source.parse(body, {}, received_at=utcnow())
    except OSError as exc:
        print(f"{args.file}: cannot read: {exc}", file=sys.stderr)
        return 2
    except WebhookRejected as exc:
        print(f"{args.file}: {exc.reason}", file=sys.stderr)
        return 1
    events = []
    for event in delivery.events:
        routed = route(event, catalog.services)
        verdict = classify(event, tier=routed.tier, config=catalog.severity)
        events.append({
            "kind": event.kind.value,
            "external_id": event.external_id,
            "title": event.title,
            "service": routed.service,
            "in_catalog": routed.entry is not None,
            "routing": routed.reason,
            "classification": verdict.as_dict(),
            "declared": verdict.severity in catalog.severity.declare.severities,
            "labels": event.labels,
        })
    print(json.dumps({"source": args.source, "dedup_key": delivery.dedup_key, "events": events}, indent=2))
    return 0


def _lint(args: argparse.Namespace) -> int:
    paths = args.paths or [Path("config"), Path("playbooks")]
    problems: list[Problem] = []
    for path in paths:
        problems.extend(_lint_path(path))
    problems.sort()
    if args.format == "json":
        print(json.dumps([p.__dict__ for p in problems], indent=2))
    else:
        for problem in problems:
            print(problem)
    return 1 if problems else 0


def _lint_path(path: Path) -> list[Problem]:
    if not path.exists():
        return [Problem(str(path), 1, 1, "", "no such file or directory")]
    files = sorted(p for p in path.rglob("*") if p.suffix in {".yaml", ".yml"}) if path.is_dir() else [path]
    problems: list[Problem] = []
    for file in files:
        model = CONFIG_FILES.get(file.name)
        if model is not None:
            problems.extend(load_config_file(file, model)[1])
    return problems


def _db_upgrade(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    migrate.upgrade(make_engine(settings.database_url))
    print("database is at the latest schema")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
