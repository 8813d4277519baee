"""The `churnsignal` command: serve one service, run all three embedded, simulate, migrate, backtest,
check-config.

Before any command runs, the configuration is checked: a problem is one line on stderr naming the variable,
and the exit code says what kind (2: configuration, 3: a dependency that cannot be reached or is not ready;
docs/configuration.md), never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from services.preflight import read_configuration
from shared.logs import configure_logging
from shared.settings import Settings
from shared.startup_errors import StartupError

SERVICES = ("ingest", "scoring", "alerts")
INTERRUPTED = 130   # 128 + SIGINT, as shells report it


def package_version() -> str:
    """The installed package's version, or pyproject.toml's when running from a source tree."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("churnsignal")
    except PackageNotFoundError:
        import tomllib

        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        try:
            return str(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"


def _port(settings: Settings, service: str) -> int:
    return {"ingest": settings.ingest_port, "scoring": settings.scoring_port,
            "alerts": settings.alerts_port}[service]


def create_app(service: str, settings: Settings):  # type: ignore[no-untyped-def]
    if service == "ingest":
        from services.ingest.bootstrap import create_app as make
    elif service == "scoring":
        from services.scoring.bootstrap import create_app as make
    elif service == "alerts":
        from services.alerts.bootstrap import create_app as make
    else:  # argparse restricts the choices
        raise ValueError(service)
    return make(settings)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from services.preflight import serve_preflight

    if args.embedded:
        # Only when asked: events then live in this process alone and are gone when it exits.
        settings = settings.model_copy(update={"kafka_bootstrap_servers": ""})
        print(f"serve {args.service} --embedded: the in-process bus; nothing leaves this process",
              file=sys.stderr)
    serve_preflight(settings, args.service, embedded=args.embedded)
    app = create_app(args.service, settings)
    uvicorn.run(app, host=args.host or settings.host, port=args.port or _port(settings, args.service),
                log_level=settings.log_level, access_log=False)
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from alembic.util import CommandError
    from sqlalchemy.exc import DBAPIError

    from services.preflight import migrate_preflight
    from shared.config_check import database_failure
    from shared.migrate import upgrade
    from shared.startup_errors import ConfigError

    target = migrate_preflight(settings)
    try:
        upgrade(settings.database_url, args.revision)
    except CommandError as exc:   # e.g. an unknown revision
        raise ConfigError(f"migrate {args.revision}: {exc}") from None
    except (DBAPIError, OSError) as exc:
        raise database_failure(target, exc) from None
    print(f"database migrated to {args.revision}")
    return 0


def cmd_check_config(args: argparse.Namespace, settings: Settings) -> int:
    from services.preflight import check_config

    return check_config(settings, services=[args.service] if args.service else SERVICES,
                        connect=not args.no_connect, version=package_version(), out=sys.stdout, err=sys.stderr)


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from services.embedded import run_embedded

    try:
        return asyncio.run(run_embedded(settings, simulate=not args.no_simulate, accounts=args.accounts,
                                        duration_s=args.duration, seed=args.seed, history_days=args.days,
                                        live_days=args.live_days, speedup=args.speedup,
                                        churn_rate=args.churn_rate, truth_path=args.truth,
                                        keep_serving=args.keep_serving))
    except KeyboardInterrupt:   # Ctrl-C before the run took over the signals (while migrating the file)
        return INTERRUPTED


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from services.simulate.cli import simulate_main

    return simulate_main(args)


def cmd_backtest(args: argparse.Namespace, settings: Settings) -> int:
    from services.scoring.backtest.cli import run

    return run(args, settings)


def cmd_calibrate(args: argparse.Namespace, settings: Settings) -> int:
    from services.scoring.backtest.calibrate import run

    return run(args, settings)


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from services.scoring.backtest.fightchurn import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="churnsignal", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"churnsignal {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run one service (production: Kafka, and PostgreSQL for scoring and "
                                         "alerts)")
    serve.add_argument("service", choices=SERVICES)
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--embedded", action="store_true",
                       help="on the in-process bus instead of Kafka (events never leave this process; "
                            "`churnsignal run` runs all three services that way)")
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", help="check the variables, the routing and scoring config files, and "
                                                "that Kafka and the database answer; print the settings in use "
                                                "(secrets masked)")
    check.add_argument("service", nargs="?", choices=SERVICES,
                       help="check what this service needs (default: all three)")
    check.add_argument("--no-connect", action="store_true", help="do not contact Kafka or the database")
    check.set_defaults(func=cmd_check_config)

    run = sub.add_parser("run", help="all three services in one process on the embedded bus and SQLite")
    run.add_argument("--no-simulate", action="store_true", help="do not feed the built-in simulator")
    run.add_argument("--accounts", type=int, default=200, help="simulated accounts (default 200)")
    run.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    run.add_argument("--keep-serving", action="store_true",
                     help="keep serving once the simulation is done, until Ctrl-C or --duration")
    from services.simulate.cli import add_generation_arguments

    add_generation_arguments(run)
    run.set_defaults(func=cmd_run)

    migrate = sub.add_parser("migrate", help="apply database migrations (Alembic)")
    migrate.add_argument("revision", nargs="?", default="head")
    migrate.set_defaults(func=cmd_migrate)

    simulate = sub.add_parser("simulate",
                              help="synthetic accounts with scripted churn stories, sent to ingest")
    from services.simulate.cli import add_arguments as add_simulate_arguments

    add_simulate_arguments(simulate)
    simulate.set_defaults(func=cmd_simulate)

    backtest = sub.add_parser("backtest", help="replay a history through scoring and measure how well it "
                                               "predicted churn (no Kafka, no database)")
    from services.scoring.backtest.cli import add_arguments as add_backtest_arguments

    add_backtest_arguments(backtest)
    backtest.set_defaults(func=cmd_backtest)

    calibrate = sub.add_parser("calibrate", help="fit the health model's weights and tiers to a labelled history "
                                                 "and write a scoring config")
    from services.scoring.backtest.calibrate import add_arguments as add_calibrate_arguments

    add_calibrate_arguments(calibrate)
    calibrate.set_defaults(func=cmd_calibrate)

    imports = sub.add_parser("import", help="convert third-party churn data (a ChurnSim simulation) into events")
    from services.scoring.backtest.fightchurn import add_arguments as add_import_arguments

    add_import_arguments(imports)
    imports.set_defaults(func=cmd_import)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = read_configuration()
        configure_logging(settings.log_level)
        return int(args.func(args, settings) or 0)
    except StartupError as exc:
        for line in exc.lines:
            print(f"error: {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
