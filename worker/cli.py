"""The `incident-worker` command line: serve, simulate, lint, db upgrade (and more as the product grows)."""

from __future__ import annotations

import argparse
import difflib
import getpass
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.exc import DatabaseError, OperationalError

from worker import __version__, logs
from worker.actions.base import known_actions
from worker.classify.config import CONFIG_FILES, check_config, load_catalog, load_config_file
from worker.classify.declaration import declaration_reason, several_alerts_reason
from worker.classify.routing import route
from worker.classify.severity import classify
from worker.domain.catalog import CatalogConfig
from worker.domain.clock import utcnow
from worker.domain.events import SOURCES
from worker.engine.intake import can_open
from worker.engine.postmortem import postmortem_markdown
from worker.engine.runtime import Runtime
from worker.engine.simulation import simulate_plans
from worker.errors import ConfigError, Problem, SettingsError, WebhookRejected
from worker.http.server import run_background, run_web, serve
from worker.playbooks.loader import claim_name, lint_playbook_file, load_playbooks, playbook_files
from worker.playbooks.schema import playbook_schema
from worker.settings import Settings
from worker.sources.registry import build_sources
from worker.store import controls, migrate, timeline
from worker.store.db import make_engine, session_factory


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
    except SettingsError as exc:
        print(f"incident-worker: {exc}", file=sys.stderr)
        return 2
    except (OperationalError, DatabaseError) as exc:  # down, unreachable, or not a database: say so, not a traceback
        if type(exc) not in (OperationalError, DatabaseError):  # IntegrityError and the like: a bug to report
            raise
        reason = next(iter(str(exc.orig or exc).strip().splitlines()), "") or type(exc.orig or exc).__name__
        print(f"incident-worker: cannot use the database: {reason}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `incident-worker schema | head`: the reader is gone, nothing left to say
        sys.stderr.close()  # and no second complaint when Python flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="incident-worker", description=__doc__)
    parser.add_argument("--version", action="version", version=f"incident-worker {__version__}")
    sub = parser.add_subparsers(metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the webhook receiver, API and background processing")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--config", type=Path, default=Path("config"), help="config directory")
    serve.add_argument("--playbooks", type=Path, default=Path("playbooks"), help="playbook directory")
    serve.add_argument("--workers", type=int, default=1, help="gunicorn worker processes (1 suits SQLite)")
    serve.add_argument("--threads", type=int, default=16, help="threads per worker")
    serve.add_argument("--dry-run", action="store_true", help="plan, gate and record; call nothing that mutates")
    serve.set_defaults(handler=_serve)

    web = sub.add_parser("web", help="only the HTTP server (for deployments that scale it separately)")
    web.add_argument("--host", default="127.0.0.1")
    web.add_argument("--port", type=int, default=8080)
    web.add_argument("--config", type=Path, default=Path("config"))
    web.add_argument("--playbooks", type=Path, default=Path("playbooks"))
    web.add_argument("--workers", type=int, default=1)
    web.add_argument("--threads", type=int, default=16)
    web.add_argument("--dry-run", action="store_true")
    web.set_defaults(handler=_web)

    background = sub.add_parser("background", help="only the background processing (inbox, executor, comms)")
    background.add_argument("--config", type=Path, default=Path("config"))
    background.add_argument("--playbooks", type=Path, default=Path("playbooks"))
    background.add_argument("--dry-run", action="store_true")
    background.set_defaults(handler=_background)

    simulate = sub.add_parser("simulate", help="classify one webhook body; no side effects, no network")
    simulate.add_argument("file", type=Path)
    simulate.add_argument("--source", required=True, choices=SOURCES)
    simulate.add_argument("--config", type=Path, default=Path("config"))
    simulate.add_argument("--playbooks", type=Path, default=Path("playbooks"))
    simulate.set_defaults(handler=_simulate)

    lint = sub.add_parser("lint", help="validate config and playbooks; path:line:col: message per problem")
    lint.add_argument("paths", nargs="*", type=Path, help="files or directories (default: config playbooks)")
    lint.add_argument(
        "--config", type=Path, default=Path("config"), help="config directory playbooks are checked against"
    )
    lint.add_argument("--format", choices=["text", "json"], default="text")
    lint.set_defaults(handler=_lint)

    schema = sub.add_parser("schema", help="print the playbook JSON Schema (for editors and CI)")
    schema.set_defaults(handler=_schema)

    for verb, text in (
        ("pause", "stop all new mutations (globally or for one service)"),
        ("resume", "allow mutations again"),
    ):
        switch = sub.add_parser(verb, help=text)
        switch.add_argument("--service", help="only this service (default: everything)")
        switch.add_argument("--reason", default="", help="why (shown in /readyz and the console)")
        switch.add_argument("--config", type=Path, default=Path("config"), help="catalog the service is checked in")
        switch.set_defaults(handler=_switch, verb=verb)

    audit = sub.add_parser("audit", help="audit trail tools")
    audit_sub = audit.add_subparsers(metavar="ACTION")
    verify = audit_sub.add_parser("verify", help="check an incident's hash-chained timeline for tampering")
    verify.add_argument("incident", type=int)
    verify.set_defaults(handler=_audit_verify)

    post = sub.add_parser("postmortem", help="print the postmortem draft (Markdown) of an incident")
    post.add_argument("incident", type=int)
    post.set_defaults(handler=_postmortem)

    demo = sub.add_parser("demo", help="run the whole flow locally: fake cluster, flag service, Route53, PagerDuty")
    demo.add_argument("--port", type=int, default=8080)
    demo.add_argument("--auto-approve", action="store_true", help="approve through the page without a browser")
    demo.add_argument("--keep-running", action="store_true", help="keep serving after the rollback")
    demo.set_defaults(handler=_demo)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(metavar="ACTION")
    upgrade = db_sub.add_parser("upgrade", help="apply migrations")
    upgrade.set_defaults(handler=_db_upgrade)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, object] = {}
    if getattr(args, "dry_run", False):
        overrides["dry_run"] = True
    if getattr(args, "config", None) is not None:
        overrides["config_dir"] = args.config
    if getattr(args, "playbooks", None) is not None:
        overrides["playbooks_dir"] = args.playbooks
    return Settings.from_env(**overrides)


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    logs.configure(level=settings.log_level, fmt=settings.log_format)
    Runtime.build(settings).close()  # refuse to start on a bad config or playbook; migrate the database
    return serve(
        host=args.host,
        port=args.port,
        workers=args.workers,
        threads=args.threads,
        config=settings.config_dir,
        playbooks=settings.playbooks_dir,
        dry_run=settings.dry_run,
    )


def _web(args: argparse.Namespace) -> int:
    settings = _settings(args)
    logs.configure(level=settings.log_level, fmt=settings.log_format)
    # Refuse a bad config, playbook or database location here, with its message, not later in a
    # gunicorn worker's traceback. Migrating stays with `serve`/`db upgrade`/`background`.
    Runtime.build(settings, migrate_db=False).close()
    run_web(settings, host=args.host, port=args.port, workers=args.workers, threads=args.threads)
    return 0


def _background(args: argparse.Namespace) -> int:
    settings = _settings(args)
    logs.configure(level=settings.log_level, fmt=settings.log_format)
    run_background(settings)
    return 0


def _simulate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    catalog = load_catalog(settings.config_dir, actions=known_actions())
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
    opening: dict[str, set[str | None]] = {}  # service -> alerts of this delivery that open (or join) its incident
    for event in delivery.events:
        routed = route(event, catalog.services)
        verdict = classify(event, tier=routed.tier, config=catalog.severity)
        opens = can_open(event)
        # An event that opens nothing (a resolve, a note) declares nothing from this delivery alone.
        reason = (
            declaration_reason(event, verdict, tier=routed.tier, policy=catalog.severity.declare) if opens else None
        )
        if opens:
            alerts = opening.setdefault(routed.service, set())
            alerts.add(event.external_id)
            if reason is None:  # as processing would: a group's second alert joins the first's incident
                reason = several_alerts_reason(len(alerts), service=routed.service, policy=catalog.severity.declare)
        events.append(
            {
                "kind": event.kind.value,
                "external_id": event.external_id,
                "title": event.title,
                "service": routed.service,
                "in_catalog": routed.entry is not None,
                "routing": routed.reason,
                "classification": verdict.as_dict(),
                # From this delivery alone: a later alert for the issue, or time unresolved, may declare it.
                "declared": reason is not None,
                "declared_because": reason,
                # False: an event that only changes an incident already open for this alert (a note, an escalation)
                "opens_incident": opens,
                "labels": event.labels,
            }
        )
    playbooks, problems = load_playbooks(settings.playbooks_dir, catalog=catalog, required=False)
    if problems:
        raise ConfigError(problems)
    plans = simulate_plans(delivery.events, catalog=catalog, playbooks=playbooks, settings=settings)
    print(
        json.dumps({"source": args.source, "dedup_key": delivery.dedup_key, "events": events, "plans": plans}, indent=2)
    )
    return 0


def _lint(args: argparse.Namespace) -> int:
    paths = args.paths or [args.config, Path("playbooks")]
    config = check_config(args.config, actions=known_actions())
    problems = list(config.problems)
    # Playbooks are checked against the services alone, so a mistake elsewhere in the config hides none of
    # their problems; without a valid services.yaml, each playbook is reported as not checked.
    catalog = config.catalog
    if catalog is None and config.services is not None:
        catalog = CatalogConfig.model_construct(services=config.services)
    names: dict[str, str] = {}  # playbook name -> file: serve refuses two playbooks of one name, so lint does
    for path in paths:
        problems.extend(_lint_path(path, args.config, catalog, names))
    problems = sorted(set(problems))
    if args.format == "json":
        print(json.dumps([p.__dict__ for p in problems], indent=2))
    else:
        for problem in problems:
            print(problem)
    return 1 if problems else 0


def _lint_path(path: Path, config_dir: Path, catalog: CatalogConfig | None, names: dict[str, str]) -> list[Problem]:
    """A file or directory, read as serve reads it: the config directory's files as config (already checked
    with it), every other YAML file under a directory as a playbook, as `serve --playbooks` would load it."""
    if not path.exists():
        return [Problem(str(path), 1, 1, "", "no such file or directory")]
    config = config_dir.resolve()
    if path.is_dir():
        if path.resolve() == config:
            return [_ignored(f) for f in sorted(path.glob("*")) if _is_yaml(f) and _ignored_config(f)]
        # Nothing below the config directory, should this one hold it (`lint .`): serve reads none of it (a
        # ConfigMap mount keeps copies of the files in such a subdirectory).
        below = path.resolve() in config.parents
        files = [p for p in playbook_files(path) if not (below and config in p.parent.resolve().parents)]
    else:
        files = [path]
    problems: list[Problem] = []
    for file in files:
        if file.parent.resolve() == config:  # `lint .`, or one file of the config directory
            if _ignored_config(file):
                problems.append(_ignored(file))
            continue  # checked with the config directory
        model = CONFIG_FILES.get(file.name) if not path.is_dir() else None
        if model is not None:  # one config file given on its own, outside the config directory
            problems.extend(load_config_file(file, model)[1])
            continue
        if catalog is None:  # a playbook is checked against the services: theirs are the problems to fix first
            problems.append(Problem(str(file), 1, 1, "", "not checked: the config's services.yaml has problems"))
            continue
        playbook, found = lint_playbook_file(file, catalog=catalog)
        problems.extend(found)
        if playbook is not None and (taken := claim_name(playbook, file, names)) is not None:
            problems.append(taken)
    return problems


def _is_yaml(path: Path) -> bool:
    return path.suffix in {".yaml", ".yml"}  # as load_playbooks (a directory named so is reported by it)


def _ignored_config(file: Path) -> bool:
    return file.name not in CONFIG_FILES


def _ignored(file: Path) -> Problem:
    """A YAML file in the config directory that serve never reads: a misspelt config file or a misplaced
    playbook, which would otherwise be left out without a word."""
    near = difflib.get_close_matches(file.name, CONFIG_FILES, n=1)
    hint = f"did you mean {near[0]}?" if near else "a playbook belongs in the playbooks directory"
    return Problem(str(file), 1, 1, "", f"serve ignores this file: it reads only {', '.join(CONFIG_FILES)} ({hint})")


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(playbook_schema(), indent=2))
    return 0


def _switch(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    scope = args.service or controls.GLOBAL
    if args.verb == "pause" and args.service:
        # A misspelt service would be "paused" while the real one goes on changing. Pausing must work
        # without the config at hand, though: then say that it could not be checked, and pause.
        try:
            known = sorted(s.name for s in load_catalog(args.config).services.services)
        except ConfigError:
            print(f"incident-worker: no catalog at {args.config} to check {args.service!r} against", file=sys.stderr)
        else:
            if args.service not in known:
                print(
                    f"incident-worker: no service {args.service!r} in the catalog ({', '.join(known)})", file=sys.stderr
                )
                return 2
    engine = make_engine(settings.database_url)
    migrate.upgrade(engine)
    with session_factory(engine).begin() as session:
        if args.verb == "pause":
            controls.pause(session, scope=scope, by=getpass.getuser(), reason=args.reason, now=utcnow())
            print(f"paused: no new mutation starts for {scope}")
        else:
            found = controls.resume(session, scope=scope)
            print(f"resumed {scope}" if found else f"{scope} was not paused")
    return 0


def _audit_verify(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    engine = make_engine(settings.database_url)
    with session_factory(engine)() as session:
        report = timeline.verify(session, incident_id=args.incident)
    if report.entries == 0:
        print(f"incident {args.incident}: no timeline entries", file=sys.stderr)
        return 2
    if report.ok:
        print(f"incident {args.incident}: timeline intact ({report.entries} entries, hash chain verified)")
        return 0
    print(f"incident {args.incident}: TAMPERED at entry {report.first_bad_id}: {report.reason}")
    return 1


def _postmortem(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    engine = make_engine(settings.database_url)
    with session_factory(engine)() as session:
        text = postmortem_markdown(session, incident_id=args.incident)
    if text is None:
        print(f"no incident {args.incident}", file=sys.stderr)
        return 2
    print(text)
    return 0


def _demo(args: argparse.Namespace) -> int:
    try:
        from worker.testing.demo import run_demo  # the demo's fakes are test tooling, loaded only for this verb
    except ImportError as exc:  # an install without the test extras (the container image)
        print(
            f"incident-worker demo needs the test extras: pip install 'incident-worker[test]' ({exc})", file=sys.stderr
        )
        return 2

    return run_demo(port=args.port, auto_approve=args.auto_approve, keep_running=args.keep_running)


def _db_upgrade(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    migrate.upgrade(make_engine(settings.database_url))
    print("database is at the latest schema")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
