"""`jobd web`: the HTTP API and the dashboard, in a process of its own that talks
to the daemon only through `jobd_client.AsyncClient` (docs/web.md).

Needs the `web` extra (Starlette, uvicorn); the daemon never imports this package.
"""
from __future__ import annotations

import argparse
import sys

from jobd import constants as C
from jobd.config import Config
from jobd.errors import ConfigError


def run(cfg: Config, args: argparse.Namespace) -> int:
    """Check the settings, then serve until SIGTERM/SIGINT."""
    try:
        from jobd.web.server import serve
        from jobd.web.settings import build
    except ImportError as e:
        print(f"jobd web: needs the web extra: pip install 'jobd-queue[web]' ({e})", file=sys.stderr)
        return C.EXIT_FAILURE
    try:
        settings = build(cfg, args)
    except ConfigError as e:
        print(f"jobd web: {e}", file=sys.stderr)
        return C.EXIT_CONFIG
    return serve(settings)
