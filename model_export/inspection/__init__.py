"""vit-inspect: the paper's Figure 7 (and Figure 6) for a checkpoint or a bundle.

inspector  the command: measure the model over a folder of images, write figures + JSON
sources    a checkpoint (PyTorch) or a bundle (ONNX Runtime) behind one interface
plots      the four figures, drawn with matplotlib's object API
"""
