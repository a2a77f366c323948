"""The service: no torch, ONNX Runtime and FastAPI. `vit-serve` (cli) is a supervisor (instance)
that starts one engine process (engine_process: the batcher, the decode stage and ONNX Runtime)
and `workers` HTTP fronts (front, app, runtime), joined by the channel and shared state (state).

cli             vit-serve: settings, then the supervisor
instance        Supervisor: the listener, the instance folder, starting and restarting processes
engine_process  the engine: pipeline, batcher, channel server, warm-up and the batch size
front           one HTTP front: uvicorn on the shared listener, draining on SIGTERM
app             the FastAPI application: middleware, routers, the one error handler
runtime         a front's Runtime: its engine client, limits, readiness, status
state           SharedState: phase, warm-up progress, each process's flags and pids
settings        Settings (VIT_* and flags), read once; memory budgets
metrics         the Prometheus registry, summed over every process
edge/           the HTTP edge: read, validate, price, authenticate; errors → answers
channel/        the fronts' and the engine's frames on a Unix socket
inference/      pipeline → batcher → engine, knowing no HTTP
v2/             the Open Inference Protocol's shapes and bytes
routes/         thin: native API, /v2, docs, probes and metrics, the page
"""
