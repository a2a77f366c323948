"""The HTTP routes, thin: a dependency brings what they need, they shape the answer.

inference    POST /classify /embed /attention, GET /model   (behind the API key when set)
docs         GET /docs /redoc /openapi.json, offline     (behind the key unless public_docs)
operations   GET /healthz /readyz /metrics                  (always open: probes and scrapes)
"""

from service.routes.docs import docs
from service.routes.inference import inference
from service.routes.operations import operations

__all__ = ["docs", "inference", "operations"]
