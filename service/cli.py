"""vit-serve: check the settings and the bundle, then run the instance (service/instance.py): the
engine process (service/engine_process.py) and settings.workers front processes
(service/front.py). This process stays small: it imports neither the web framework nor ONNX
Runtime, which the processes it starts load for themselves.

Exit codes: 0 after a clean shutdown (SIGTERM or Ctrl-C: every accepted request answered); 1
when work was still queued at the end of drain_timeout_s, or a process of the instance failed; 2
for an invalid setting, bundle or provider (the message names the setting); 3 when the server
could not start (e.g. the port is taken; the log says why).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from service.instance import configure_logging, run_instance
from service.settings import Settings, describe, invalid_setting, unknown_variables
from vit_core.bundle import BundleError, load_bundle

log = logging.getLogger("service")

FRONT = "service.front:front_main"
ENGINE = "service.engine_process:engine_main"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = Settings.from_cli(sys.argv[1:] if argv is None else argv)
    except ValidationError as e:
        print(f"vit-serve: {describe(e)}", file=sys.stderr)
        return 2
    configure_logging(settings)
    for var in unknown_variables():
        log.warning("ignoring %s: not a vit-serve setting", var)
    try:  # checked once here: a bad bundle is one message, not one per process
        load_bundle(settings.bundle)
    except BundleError as e:
        print(f"vit-serve: {invalid_setting('bundle', e)}", file=sys.stderr)
        return 2
    return run_instance(settings, front=FRONT, engine=ENGINE)


if __name__ == "__main__":
    sys.exit(main())
