"""Checkpoint formats: one small adapter per source format behind one ordered registry.

A checkpoint is opened once (files.open_checkpoint): its folder's files are listed, its config.json
read on first use, and its weights' key names read without loading a tensor (a safetensors
header, a sharded index's weight_map, an .npz zip directory; a torch pickle has to be loaded to
list its keys, and that load is kept for the adapter). Then registry.choose asks each adapter in
turn, `detect(keys, files) -> bool`, and the first yes reads the checkpoint, `load(checkpoint,
hints) -> (ViTConfig, state_dict)`, its state dict in our names. `--format NAME` picks an adapter
directly but must agree with that adapter's detect, so a contradicting --format is one clear error.

    hf      transformers ViT folder (config.json model_type "vit") or a bare HF-keyed file
    timm    timm VisionTransformer file (patch_embed.proj...) or a timm hub folder ("architecture"),
            the family's variants included (DeiT, DINOv2, CLIP, SigLIP: geometry.family_from_shapes)
    npz     Google's released Flax .npz (Transformer/encoderblock_N/MultiHeadDotProductAttention_1)
    timm-hybrid  timm hybrid ResNet + ViT (patch_embed.backbone...), file or hub folder
    npz-linen    Google .npz in today's vit_jax Linen names (MultiHeadDotProductAttention_0, ...)
    npz-hybrid   Google hybrid .npz (conv_root, gn_root, block{s}/unit{u}/..., then the ViT)
    hf-deit      transformers DeiT (model_type "deit", or deit.* keys)
    hf-dinov2    transformers DINOv2, with or without registers (model_type, or layer_scale keys)
    hf-clip      transformers CLIP image tower (model_type "clip_vision_model" or "clip")
    hf-siglip    transformers SigLIP image tower (model_type "siglip_vision_model" or "siglip")
    dinov2       DINOv2's own .pth (timm's names plus mask_token, register_tokens, mlp.w12/w3)
    open-clip    open_clip / OpenAI CLIP (visual.transformer.resblocks...), file or hub folder
    native  our folder: model.safetensors + config.json (ViTConfig fields) + labels.json

The transformers families share hf.py's layer mapping (every family's layer names, 4.x and 5.x)
and family_config (sizes from the shapes, the rest from config.json and preprocessor_config.json).

Adding a format is one module and one registry line:

1. model_export/formats/<name>.py with a pure mapping (their state dict in, ours out), a config
   reader, `detect(keys, files)` (names only: `keys` is a frozenset of weight names, `files` a
   Files with is_folder, weights, names and config), `load(checkpoint, heads)` (read the data
   with checkpoint.tensors() or checkpoint.arrays(); hints carry the caller's --heads and --grid
   for what a file does not record; wrap the pure functions in base.reading so their ValueErrors
   become CheckpointErrors naming the file), and `ADAPTER = Adapter(name, detect, load)`.
   geometry.config_from_shapes reads a ViT's sizes from a state dict's shapes.
2. Its ADAPTER in registry.ADAPTERS, before any adapter whose detect would also say yes. Keep
   detects exclusive where the keys allow it, so each adapter claims only its own files: timm's
   declines `patch_embed.backbone.*` (a timm hybrid ResNet + ViT, its own adapter), npz's declines
   any array outside the released ViT names (a Google hybrid's `conv_root`, `block1/unit1/...`,
   or today's Linen names `encoderblock_N/LayerNorm_1`, `MlpBlock_0`,
   `MultiHeadDotProductAttention_0`, each their own adapter).

The registry's FORMATS (auto + every adapter name) feeds --format in vit-train and vit-export.
"""

from model_export.formats.adapter import Adapter, Hints
from model_export.formats.base import CheckpointError, State
from model_export.formats.files import Checkpoint, Files, open_checkpoint
from model_export.formats.geometry import infer_heads
from model_export.formats.registry import ADAPTERS, FORMATS, check_format, choose, detect_format

__all__ = [
    "ADAPTERS",
    "FORMATS",
    "Adapter",
    "Checkpoint",
    "CheckpointError",
    "Files",
    "Hints",
    "State",
    "check_format",
    "choose",
    "detect_format",
    "infer_heads",
    "open_checkpoint",
]
