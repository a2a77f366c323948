"""transformers CLIP image towers (CLIPVisionModelWithProjection, CLIPVisionModel, and the
vision half of a two-tower CLIPModel): the adapter and the key mapping.

Detected by a folder's config.json (model_type "clip_vision_model", or "clip" whose vision_config
is read) or a lone file's `vision_model.embeddings.class_embedding`. The encoder layers are
`encoder.layers.N.{self_attn.{q,k,v,out}_proj,layer_norm{1,2},mlp.fc{1,2}}` (hf.py); the rest,
under `vision_model.`:

    embeddings.class_embedding (D,)              -> cls_token (1, 1, D)
    embeddings.position_embedding.weight (T, D)  -> pos_embed (1, T, D)
    embeddings.patch_embedding (no bias)         -> patch_embed.proj
    pre_layrnorm, post_layernorm                 -> norm_pre, norm
    visual_projection (E, D), no bias            -> proj

and a two-tower model's text half (text_model., text_projection, logit_scale) is dropped. What
/embed publishes is CLIP's image embedding, the one users compare with text embeddings: the
projected class token, L2-normalised (image_embeds / ‖image_embeds‖); a CLIPVisionModel without
a projection publishes its pooler_output. QuickGELU and LayerNorm eps 1e-5 come from config.json.
"""

from __future__ import annotations

from model_export.formats.adapter import Adapter, Hints
from model_export.formats.base import State, reading
from model_export.formats.files import Checkpoint, Files
from model_export.formats.hf import Family, family_config, from_transformers
from model_export.model.vit import ViTConfig

_TOP = {
    "embeddings.class_embedding": "cls_token",
    "embeddings.position_embedding.weight": "pos_embed",
    "embeddings.patch_embedding.weight": "patch_embed.proj.weight",
    "pre_layrnorm.weight": "norm_pre.weight",
    "pre_layrnorm.bias": "norm_pre.bias",
    "post_layernorm.weight": "norm.weight",
    "post_layernorm.bias": "norm.bias",
    "visual_projection.weight": "proj.weight",
}
_IGNORED = ("text_model.", "text_projection.", "logit_scale", "embeddings.position_ids")
FAMILY = Family(
    model_types=("clip_vision_model", "clip"),
    config=dict(num_attention_heads=12, hidden_act="quick_gelu", layer_norm_eps=1e-5),
    processor=dict(  # CLIPImageProcessor: shorter side 224, centre crop 224, OpenAI statistics
        size={"shortest_edge": 224},
        crop_size={"height": 224, "width": 224},
        do_center_crop=True,
        resample=3,
        image_mean=(0.48145466, 0.4578275, 0.40821073),
        image_std=(0.26862954, 0.26130258, 0.27577711),
    ),
    pos_embed_resize="bicubic",
)


def from_hf_clip(state: State) -> State:
    out = from_transformers(state, _TOP, _IGNORED, ("vision_model.",), "transformers CLIP")
    if "cls_token" in out:
        out["cls_token"] = out["cls_token"].reshape(1, 1, -1)  # (D,) -> (1, 1, D)
    if "pos_embed" in out:
        out["pos_embed"] = out["pos_embed"].unsqueeze(0)  # (T, D) -> (1, T, D)
    return out


def detect(keys: frozenset[str], files: Files) -> bool:
    if files.is_folder:
        return files.config.get("model_type") in FAMILY.model_types
    return "vision_model.embeddings.class_embedding" in keys


def load(checkpoint: Checkpoint, hints: Hints) -> tuple[ViTConfig, State]:
    files = checkpoint.files
    state = reading(files.weights or files.path, from_hf_clip, checkpoint.tensors())
    return reading(files.path, family_config, state, files, FAMILY, hints)


ADAPTER = Adapter("hf-clip", detect, load)
