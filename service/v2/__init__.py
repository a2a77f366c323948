"""The Open Inference Protocol (KServe v2), beside the native API: its wire shapes and the
translation to and from what the pipeline runs. The routes are service/routes/v2.py.

    schemas       the JSON of requests, answers and metadata; tensor names; model metadata
    infer         an infer body → images or pixels and the outputs wanted; rows → the answer
    wire          the bytes: JSON header ‖ binary tail, Content-Encoding, BYTES tensors
"""
