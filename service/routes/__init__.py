"""The HTTP routes, thin: a dependency brings what they need, they shape the answer.

inference    POST /classify /embed /attention, GET /model   (behind the API key when set)
v2           the Open Inference Protocol under /v2          (behind the API key when set)
docs         GET /docs /redoc /openapi.json, offline        (behind the key unless public_docs)
operations   GET /healthz /readyz /metrics                  (always open: probes and scrapes)
probes       GET /v2/health/live /v2/health/ready           (always open: probes)
page         GET / and its static files                     (open; its API calls send the key)
"""

from service.routes.docs import docs
from service.routes.inference import inference
from service.routes.operations import operations
from service.routes.page import page
from service.routes.v2 import probes, v2

__all__ = ["docs", "inference", "operations", "page", "probes", "v2"]
