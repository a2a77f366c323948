"""transformers SigLIP image towers (SiglipVisionModel, and the vision half of a two-tower
SiglipModel): the adapter and the key mapping.

Detected by a folder's config.json (model_type "siglip_vision_model", or "siglip" whose
vision_config is read) or a lone file's attention-pooling probe. SiglipVisionModel saves its keys
without the `vision_model.` prefix a SiglipModel has; either reads. The encoder layers are CLIP's
names (hf.py); the rest:

    embeddings.patch_embedding                   -> patch_embed.proj
    embeddings.position_embedding.weight (N, D)  -> pos_embed (1, N, D): no class token
    post_layernorm                               -> norm
    head.probe                                   -> attn_pool.latent
    head.attention.in_proj_{weight,bias} (3D…)   -> attn_pool.q (first D rows), attn_pool.kv
    head.attention.out_proj, head.layernorm      -> attn_pool.proj, attn_pool.norm
    head.mlp.fc{1,2}                             -> attn_pool.mlp.fc{1,2}

and a two-tower model's text half is dropped. /embed publishes the pooling head's output
(pooler_output); /attention shows the head's attention over the patches. transformers (as
big_vision) runs SigLIP with tanh-GELU, timm with exact GELU: the config says which.
"""

from __future__ import annotations

from model_export.formats.adapter import Adapter, Hints
from model_export.formats.base import State, reading
from model_export.formats.files import Checkpoint, Files
from model_export.formats.hf import Family, family_config, from_transformers
from model_export.model.vit import ViTConfig

_TOP = {
    "embeddings.patch_embedding.weight": "patch_embed.proj.weight",
    "embeddings.patch_embedding.bias": "patch_embed.proj.bias",
    "embeddings.position_embedding.weight": "pos_embed",
    "post_layernorm.weight": "norm.weight",
    "post_layernorm.bias": "norm.bias",
    "head.probe": "attn_pool.latent",
    "head.attention.in_proj_weight": "attn_pool.in_proj.weight",  # split below
    "head.attention.in_proj_bias": "attn_pool.in_proj.bias",
    "head.attention.out_proj.weight": "attn_pool.proj.weight",
    "head.attention.out_proj.bias": "attn_pool.proj.bias",
    "head.layernorm.weight": "attn_pool.norm.weight",
    "head.layernorm.bias": "attn_pool.norm.bias",
    "head.mlp.fc1.weight": "attn_pool.mlp.fc1.weight",
    "head.mlp.fc1.bias": "attn_pool.mlp.fc1.bias",
    "head.mlp.fc2.weight": "attn_pool.mlp.fc2.weight",
    "head.mlp.fc2.bias": "attn_pool.mlp.fc2.bias",
}
_IGNORED = ("text_model.", "logit_scale", "logit_bias", "embeddings.position_ids")
FAMILY = Family(
    model_types=("siglip_vision_model", "siglip"),
    config=dict(num_attention_heads=12, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6),
    processor=dict(  # SiglipImageProcessor: straight to 224 × 224, pixels to [-1, 1]
        size={"height": 224, "width": 224},
        resample=3,
        image_mean=(0.5, 0.5, 0.5),
        image_std=(0.5, 0.5, 0.5),
    ),
    pos_embed_resize="bicubic",
)


def from_hf_siglip(state: State) -> State:
    out = from_transformers(state, _TOP, _IGNORED, ("vision_model.",), "transformers SigLIP")
    if "attn_pool.latent" not in out:
        raise ValueError("a SigLIP tower without its attention-pooling head is unsupported")
    if "pos_embed" in out:
        out["pos_embed"] = out["pos_embed"].unsqueeze(0)  # (N, D) -> (1, N, D)
    for param in ("weight", "bias"):  # nn.MultiheadAttention packs q, k, v: q, then k and v
        packed = out.pop(f"attn_pool.in_proj.{param}", None)
        if packed is None:
            raise ValueError(f"the attention-pooling head lacks its in_proj_{param}")
        d = packed.shape[0] // 3
        out[f"attn_pool.q.{param}"], out[f"attn_pool.kv.{param}"] = packed[:d], packed[d:]
    return out


def detect(keys: frozenset[str], files: Files) -> bool:
    if files.is_folder:
        return files.config.get("model_type") in FAMILY.model_types
    return any(k.removeprefix("vision_model.") == "head.probe" for k in keys)


def load(checkpoint: Checkpoint, hints: Hints) -> tuple[ViTConfig, State]:
    files = checkpoint.files
    state = reading(files.weights or files.path, from_hf_siglip, checkpoint.tensors())
    return reading(files.path, family_config, state, files, FAMILY, hints)


ADAPTER = Adapter("hf-siglip", detect, load)
