"""The two demo models, trained here from nothing, and the data they are trained on.

shapes_train   the default bundle's model: synthetic shapes in any colours (make demo)
shapes         drawing the shapes (also the exporter's check pictures); python -m to write PNGs
shapes_colour  colours and contrasts of the free-appearance shapes
shapes_grounds the grounds they are drawn on
fashion_train  Fashion-MNIST with the paper's recipe (make demo-fashion)
fashion_data   Fashion-MNIST's idx files as tensors and PNGs
"""
