"""DINOv2 checkpoints from its own code (facebookresearch/dinov2, torch.hub's .pth files): the
adapter and the key mapping.

Detected by a file whose keys are a ViT's with DINOv2's mask token and LayerScale gammas. The
names are timm's (timm.py reads the rest) but for:

    mask_token                      dropped (masked-image pre-training only)
    register_tokens (1, R, D)       -> reg_token: after [CLS], no position, as its code adds them
    blocks.N.mlp.w12, mlp.w3        -> blocks.N.mlp.fc1, fc2 (the giant's SwiGLU, gate first)

The position embeddings cover 518 px; its code interpolates them for any input, bicubic, the grid
scaled by (g' + 0.1) / g in the models without registers and antialiased (no offset) in those
with. The config records which (pos_embed_resize), so `--image-size 224` (vit-export, vit-train)
resizes them as DINOv2 itself would. Preprocessing: ImageNet statistics, bicubic, 256 → 224 crop.
"""

from __future__ import annotations

from model_export.formats import timm
from model_export.formats.adapter import Adapter, Hints
from model_export.formats.base import State, reading
from model_export.formats.files import Checkpoint, Files
from model_export.model.vit import ViTConfig

_RENAMES = (("register_tokens", "reg_token"), (".mlp.w12.", ".mlp.fc1."), (".mlp.w3.", ".mlp.fc2."))
_PREPROCESS = dict(
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    interpolation="bicubic",
    resize_mode="crop",
    crop_pct=224 / 256,
)


def from_dinov2(state: State) -> State:
    """DINOv2's own names -> timm's -> ours; its registers never have a position."""
    sd = {}
    for key, tensor in state.items():
        name = timm.strip_prefixes(key)
        if name == "mask_token":
            continue
        for theirs, ours in _RENAMES:
            name = name.replace(theirs, ours)
        sd[name] = tensor
    pos = sd.get("pos_embed")
    patches = None if pos is None else pos.shape[1] - 1  # [CLS] has a position, registers not
    return timm.from_timm(sd, patches)


def detect(keys: frozenset[str], files: Files) -> bool:
    stripped = {timm.strip_prefixes(k) for k in keys}
    return "mask_token" in stripped and "blocks.0.ls1.gamma" in stripped


def load(checkpoint: Checkpoint, hints: Hints) -> tuple[ViTConfig, State]:
    files = checkpoint.files
    state = reading(files.weights or files.path, from_dinov2, checkpoint.tensors())
    resize = "bicubic-antialias" if "reg_token" in state else "bicubic-offset"
    config = reading(
        files.path, timm.timm_config, state, hints, {}, pos_embed_resize=resize, **_PREPROCESS
    )
    return config, state


ADAPTER = Adapter("dinov2", detect, load)
