"""Inference, knowing nothing of HTTP: a request's inputs in, the rows it asked for out.

pipeline      reserve room → decode + preprocess → batch → rows back, under a deadline
batcher       dynamic batching: concurrent requests' images share ONNX Runtime calls
batch_request what the batcher keeps per request and per queued image
engine        the ONNX Runtime sessions of a bundle, one per graph role
engine_io     the batch buffer, IO binding and the CUDA provider's options
device_decode JPEGs decoded by nvImageCodec and resized by an ONNX graph beside the model
gpu           the NVIDIA driver against the CUDA ONNX Runtime was built with
outputs       logits → probabilities and top-k; embeddings normalised or base64
"""
