"""The HTTP edge: what happens to a request before it reaches the model, and to an error after.

inputs        a body → the encoded images it carries (multipart, image/*, JSON), bounded
deps          what a route may ask for: the runtime, the API key check, an inference job
middleware    per-request accounting: request metrics and the timing headers
connections   uvicorn's h11 with a header deadline and a connection cap; the request guard
responses     an error → its HTTP answer, in the shape its route speaks (native or v2)
schemas       response bodies and the OpenAPI descriptions of requests and errors
"""
