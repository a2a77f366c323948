"""The model: the paper's ViT and its hybrid, as plain PyTorch.

vit                 ViTConfig + ViT: patches (or a ResNet feature map) → encoder → head; the
                    family's variants (DeiT, DINOv2, CLIP, SigLIP) as config fields
pooling             SigLIP's attention-pooling (MAP) head
resnet              the hybrid's BiT ResNet v1 (weight-standardised convolutions, GroupNorm)
pos_embed           resizing the position embeddings to another grid (2D interpolation)
presets             named sizes (ViT-Ti/S/B/L/H, R50+ViT) as ViTConfig overrides
attention_distance  the mean attention distance of Figure 7, computed in the graph
"""
