"""The channel between the fronts and the engine: one Unix socket per front, framed by struct.

messages      the frames byte for byte (SUBMIT, CANCEL, INFO, RESULT, ERROR), flow-controlled
front_side    EngineClient: a front's one connection, many requests in flight on it
engine_side   ChannelServer: each SUBMIT through the pipeline, answered once
"""
