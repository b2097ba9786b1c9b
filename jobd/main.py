"""`jobd`: the daemon's command line (docs/configuration.md)."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any

from jobd import __version__
from jobd import constants as C
from jobd.config import FSYNC_MODES, LOG_LEVELS, Config, load
from jobd.errors import ConfigError, StartupError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jobd", description="jobd: a durable job queue daemon for one host")
    p.add_argument("--version", action="version", version=f"jobd {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the daemon in the foreground")
    _serve_flags(serve)
    demo = sub.add_parser("demo", help="run jobd on its embedded defaults with the example "
                                       "handlers, push a few jobs through it, and stop")
    _serve_flags(demo)
    demo.add_argument("--keep-running", action="store_true",
                      help="keep serving after the demo jobs are done (Ctrl-C stops)")
    web = sub.add_parser("web", help="serve the HTTP API and the dashboard (needs the web extra; "
                                     "docs/web.md)")
    _web_flags(web)
    return p


def _web_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="PATH", help="TOML config file, the daemon's (default: $JOBD_CONFIG)")
    p.add_argument("--listen", metavar="HOST:PORT",
                   help="where to serve (default 127.0.0.1:8790; port 0: any free one)")
    p.add_argument("--uds", metavar="PATH",
                   help="serve on this Unix socket instead of TCP (e.g. behind nginx)")
    p.add_argument("--socket", metavar="PATH",
                   help="the daemon's Unix socket (default: found as jobd-cli finds it)")
    p.add_argument("--token-file", metavar="PATH",
                   help="file (mode 0600) holding the token every request must carry")
    p.add_argument("--read-only", action="store_true", help="refuse every change (405 to POST, PUT, "
                                                             "PATCH, DELETE)")
    p.add_argument("--log-level", choices=LOG_LEVELS, type=str.lower, help="log level")


def _serve_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config file (default: $JOBD_CONFIG)")
    p.add_argument("--socket", help="Unix socket path")
    p.add_argument("--data-dir", help="directory for the WAL and results")
    p.add_argument("--workers", type=int, help="worker processes (0: run no jobs)")
    p.add_argument("--handlers", help="comma-separated handler modules to import")
    p.add_argument("--app-dir", help="directory put first on sys.path before the handler "
                                     "modules are imported (default: the current directory)")
    p.add_argument("--fsync", choices=FSYNC_MODES, help="WAL fsync mode")
    p.add_argument("--log-level", choices=LOG_LEVELS, type=str.lower, help="log level")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    handlers = [h.strip() for h in args.handlers.split(",") if h.strip()] if args.handlers else None
    if args.workers is not None and args.workers < 0:
        raise ConfigError("--workers must be >= 0")
    return {"server.socket": args.socket, "data_dir": args.data_dir,
            "workers.count": args.workers, "handlers": handlers,
            "wal.fsync": args.fsync, "log_level": args.log_level, "app_dir": args.app_dir}


class OneLineFormatter(logging.Formatter):
    """A record is one line, traceback included: journald (and grep) would split
    a multi-line record into unrelated entries. Line breaks become ` | `."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if "\n" in text:
            text = " | ".join(part for part in text.splitlines() if part.strip())
        return text


def setup_logging(level: str) -> None:
    """One line per event on stderr; journald adds its own timestamps."""
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def load_config(args: argparse.Namespace) -> Config:
    if args.command == "web":         # its flags are checked by jobd.web, not the daemon's
        return load(args.config, overrides={"log_level": args.log_level})
    return load(args.config, overrides=_overrides(args))


def serve(cfg: Config) -> int:
    import uvloop

    from jobd.boot import abandon, prepare
    from jobd.daemon import Daemon
    try:
        boot = prepare(cfg)
    except StartupError as e:
        logging.getLogger("jobd").critical("%s", e)
        return C.EXIT_FAILURE
    except ConfigError as e:            # a [[schedule]] naming an unknown handler
        print(f"jobd: {e}", file=sys.stderr)
        return C.EXIT_CONFIG

    async def run() -> int:
        return await Daemon(cfg, boot, asyncio.get_running_loop()).run()
    try:
        return uvloop.run(run())
    except Exception as e:  # noqa: BLE001 - one clear line, not a traceback, for operators
        logging.getLogger("jobd").critical("jobd failed: %s: %s", type(e).__name__, e)
        logging.getLogger("jobd").debug("traceback", exc_info=True)
        abandon(cfg, boot)
        return C.EXIT_FAILURE


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return C.EXIT_USAGE
    try:
        cfg = load_config(args)
    except ConfigError as e:
        print(f"jobd: {e}", file=sys.stderr)
        return C.EXIT_CONFIG
    setup_logging(cfg.log_level)
    if args.command == "web":
        from jobd.web import run as run_web  # lazily: the daemon never imports Starlette
        return run_web(cfg, args)
    if args.command == "demo":
        from jobd.demo import run_demo
        return run_demo(cfg, keep_running=args.keep_running)
    return serve(cfg)


if __name__ == "__main__":
    sys.exit(main())
