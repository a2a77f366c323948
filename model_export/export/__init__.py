"""vit-export: a ViT → a bundle (model.json + ONNX graphs), checked against PyTorch first.

exporter   the command and export_bundle: assemble, check, then move into place
graphs     the fast and explain graphs: torch.onnx export, ORT fusion, float16
pixels     uint8 pixels in, the bundle's normalisation as the graph's first nodes
int8       ONNX Runtime's dynamic quantisation of the dense layers
check      the self-check: ONNX Runtime against PyTorch on the same pixels, the fp32 gate scaled
           to the model's own float32 noise (PyTorch float32 against float64)
manifest   what model.json records about each graph, the backbone and the weights
"""
