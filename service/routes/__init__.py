"""The HTTP routes, thin: a dependency brings what they need, they shape the answer. Each module
has its `router` (v2 also `probes_router`); app.py includes them.

inference    POST /classify /embed /attention, GET /model   (behind the API key when set)
v2           the Open Inference Protocol under /v2          (behind the API key when set)
             and its probes GET /v2/health/live, /ready     (always open: probes)
docs         GET /docs /redoc /openapi.json, offline        (behind the key unless public_docs)
operations   GET /healthz /readyz /metrics                  (always open: probes and scrapes)
page         GET / and its static files                     (open; its API calls send the key)
"""
