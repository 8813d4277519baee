"""The `churnsignal` command: serve one service, run all three embedded, simulate, migrate, backtest."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from shared.settings import Settings

SERVICES = ("ingest", "scoring", "alerts")


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


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

    if settings.embedded and args.service != "ingest":
        print("serve needs CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS (use `churnsignal run` for the embedded mode)",
              file=sys.stderr)
        return 2
    app = create_app(args.service, settings)
    uvicorn.run(app, host=args.host or settings.host, port=args.port or _port(settings, args.service),
                log_level=settings.log_level, access_log=False)
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from shared.migrate import upgrade

    upgrade(settings.database_url, args.revision)
    print(f"database migrated to {args.revision}")
    return 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from services.embedded import run_embedded

    return asyncio.run(run_embedded(settings, simulate=not args.no_simulate, accounts=args.accounts,
                                    duration_s=args.duration, seed=args.seed, history_days=args.days,
                                    live_days=args.live_days, speedup=args.speedup,
                                    churn_rate=args.churn_rate, truth_path=args.truth,
                                    keep_serving=args.keep_serving))


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
    parser = argparse.ArgumentParser(prog="churnsignal", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run one service (production)")
    serve.add_argument("service", choices=SERVICES)
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.set_defaults(func=cmd_serve)

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
    settings = Settings()
    _configure_logging(settings.log_level)
    return int(args.func(args, settings) or 0)


if __name__ == "__main__":
    sys.exit(main())
