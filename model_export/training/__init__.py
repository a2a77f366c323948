"""vit-train: fine-tuning with the paper's recipe, and the data it reads.

recipe      the loop: zero-initialised head, SGD + momentum, warm-up + cosine, clipping
cli         the vit-train command
data        image folders (one sub-folder per class), decoded through vit_core's transform
augment     cheap seeded tensor augmentation (shifts, recolouring)
"""
