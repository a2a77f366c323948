"""vit-serve: check the settings and the bundle, then run the service under uvicorn.

Exit codes: 0 after a clean shutdown; 2 for an invalid setting, bundle or provider (the message
names the setting); 3 when the server could not start (e.g. the port is taken; the log says why).
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Sequence

import uvicorn
from pydantic import ValidationError

from service.app import create_app
from service.bundle import BundleError, load_bundle
from service.engine import Engine, EngineError
from service.settings import Settings, describe, unknown_variables

log = logging.getLogger("service")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = Settings.from_cli(sys.argv[1:] if argv is None else argv)
    except ValidationError as e:
        print(f"vit-serve: {describe(e)}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    for var in unknown_variables():
        log.warning("ignoring %s: not a vit-serve setting", var)
    # Load here, not in the app's start-up, so that a bad bundle or provider is a message naming
    # the setting rather than a traceback from the server.
    try:
        engine = Engine(settings.bundle, load_bundle(settings.bundle), settings.providers)
    except BundleError as e:
        print(f"vit-serve: invalid setting bundle (--bundle / VIT_BUNDLE): {e}", file=sys.stderr)
        return 2
    except EngineError as e:
        print(f"vit-serve: invalid setting providers (--providers): {e}", file=sys.stderr)
        return 2
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, engine),
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            timeout_graceful_shutdown=math.ceil(settings.drain_timeout_s),
            server_header=False,
        )
    )
    server.run()
    return 0 if server.started else 3


if __name__ == "__main__":
    sys.exit(main())
