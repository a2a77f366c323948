"""The HTTP routes, thin: a dependency brings what they need, they shape the answer.

inference    POST /classify /embed /attention, GET /model   (behind the API key when set)
operations   GET /healthz /readyz /metrics                  (always open: probes and scrapes)
"""

from service.routes.inference import inference
from service.routes.operations import operations

__all__ = ["inference", "operations"]
