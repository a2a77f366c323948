"""The client's error tree: what stops a whole run. A single image the server refuses is not an
exception but a Result with an ImageError, so one bad file never stops a thousand good ones.

    ClientError
    ├── InputError          a source names nothing to send (missing file, empty folder, bad glob)
    ├── ServerUnreachable   no connection to the server at all
    └── Unauthorized        401: the API key is missing or wrong (every request would fail)
"""

from __future__ import annotations


class ClientError(Exception):
    """Stops the whole run; the message is one line for the user."""


class InputError(ClientError, ValueError):
    pass


class ServerUnreachable(ClientError):
    pass


class Unauthorized(ClientError):
    pass
