"""The bundle: model.json + ONNX graphs, the only contract between model_export/ and service/.

The exporter writes model.json through `BundleManifest` and the service reads it back through the
same class, so the two sides cannot drift. `load_bundle` also checks that every graph file is there
and matches its recorded sha256, so a half-copied bundle fails at start, not on the first request.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vit_core.errors import describe_validation
from vit_core.geometry import TokenGrid, fits

# 2: the graphs may take uint8 pixels and normalise them themselves ("pixels" below). A version 1
# manifest has no such field and its graphs take float32 (B, 3, H, W) pixels already normalised.
# 3: the manifest says which embedding the graphs publish ("embedding") and what the attention map
# shows ("attention"), and a model may have no classification head (no labels, logits (B, 0)).
# Versions 1 and 2 have neither field and read as the [CLS] embedding and its rollout.
SCHEMA_VERSION: Final = 3
MANIFEST = "model.json"
# Graph roles: FAST answers logits + embedding; EXPLAIN the same plus the attention rollout.
Role = Literal["fast", "explain"]
FAST: Final = "fast"
EXPLAIN: Final = "explain"
Precision = Literal["fp32", "fp16", "int8"]  # int8: dense layers only; IO float32

# The graphs' tensor names: the exporter writes them, the engine feeds and fetches them, the routes
# read them. Declared here only.
INPUT: Final = "pixels"  # (B, H, W, 3) uint8, or as the manifest's "pixels" says
LOGITS: Final = "logits"  # (B, K); (B, 0) for a model without a head
EMBEDDING: Final = "embedding"  # (B, E): what /embed returns, as the manifest's "embedding" says
# (B, N): the attention map over the N = rows·cols patches alone (never a class, distillation or
# register token), as the manifest's "attention" says: the rollout's [CLS] row, or the pooling
# head's attention for a model without a class token
ROLLOUT: Final = "rollout"
# (B, L, H): mean attention distance in pixels per layer and head; for vit-inspect, never fetched
ATTENTION_DISTANCE: Final = "attention_distance"
# What each role must answer: the validator requires these, the engine fetches only these.
OUTPUTS: Final[dict[Role, tuple[str, ...]]] = {
    FAST: (LOGITS, EMBEDDING),
    EXPLAIN: (LOGITS, EMBEDDING, ROLLOUT),
}

DType = Literal["float32", "float16", "uint8"]
Layout = Literal["NHWC", "NCHW"]
# What ROLLOUT shows: "rollout", Abnar & Zuidema's attention rollout read at the class token;
# "pooling", the attention-pooling head's weights over the patches (SigLIP), mean over heads.
AttentionKind = Literal["rollout", "pooling"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    name: str
    shape: list[int | str]  # a str is a symbolic (dynamic) axis, e.g. "batch"
    dtype: DType


class GraphSpec(_Strict):
    file: str = Field(pattern=r"^[\w.-]+\.onnx$")  # a bare name: graphs live in the bundle folder
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    # com.microsoft Attention/MultiHeadAttention nodes: depth when every block runs one fused kernel
    fused_attention: int = Field(default=0, ge=0)


class Preprocess(_Strict):
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: Literal["bicubic", "bilinear", "nearest"]
    resize_mode: Literal["squash", "crop"]  # squash: straight to H×W; crop: shorter side + centre
    crop_pct: float = Field(gt=0, le=1)


class PixelFormat(_Strict):
    """What the graphs' INPUT takes. uint8: the decoded 0..255 RGB pixels, which the graph itself
    normalises ((x / 255 - mean) / std, from "preprocess"); float32: pixels the host normalised.

    The default is what every version 1 bundle takes, so an old model.json reads as it always did.
    """

    dtype: Literal["uint8", "float32"] = "float32"
    layout: Layout = "NCHW"

    def shape(self, hw: tuple[int, int]) -> list[int]:
        """One image's shape, after the batch axis."""
        return [*hw, 3] if self.layout == "NHWC" else [3, *hw]


LEGACY_PIXELS: Final = PixelFormat()  # float32, NCHW, normalised by the host


class Backbone(_Strict):
    """A hybrid's CNN: a BiT ResNet v1 whose feature map the patch embedding reads (paper §3.1)."""

    stages: list[Annotated[int, Field(gt=0)]]  # bottlenecks per stage; [] = the stem alone
    width: int = Field(gt=0)  # width factor: 64·w stem channels
    stride: int = Field(gt=0)  # input pixels per feature-map cell (4 for the stem, 16 for R50)


Side = Annotated[int, Field(gt=0)]


class EmbeddingSpec(_Strict):
    """What EMBEDDING holds, so a client knows what it compares: e.g. "cls" (the [CLS] token after
    the final LayerNorm), "cls_dist_mean" (DeiT), "map" (SigLIP's pooling head),
    "cls_projection" (CLIP's image embedding in the joint image-text space)."""

    name: str = Field(min_length=1)
    dim: int = Field(gt=0)  # E: D, or a projection's width
    normalized: bool = False  # L2-normalised in the graph (CLIP): unit length as it comes


LEGACY_EMBEDDING_NAME: Final = "cls"  # what every manifest before version 3 published


class Source(_Strict):
    format: str  # hf | timm | npz | native
    sha256: str  # of the weights file the export read


class OutputError(_Strict):
    max_abs: float
    max_rel: float  # max |ort - torch| / max |torch| over the check images
    # fp32 graphs (schema 3): PyTorch float32 against float64 on the same inputs, measured the same
    # way: the model's own float32 noise; and the gate max_rel had to meet, scaled from it
    float32_noise: float | None = None
    gate: float | None = None


class GraphValidation(_Strict):
    """ONNX Runtime (CPU provider) against PyTorch on the same inputs."""

    batch_sizes: list[int]
    images: int  # how many images were compared in all
    outputs: dict[str, OutputError]  # per output name
    top1_agreement: float | None  # fraction of images whose arg-max class matches; None: no head
    embedding_cosine_min: float
    # worst per-image Pearson correlation of the rollout with PyTorch's (graphs that answer one)
    rollout_correlation_min: float | None = None


class BundleManifest(TokenGrid, _Strict):
    schema_version: Literal[1, 2, 3] = SCHEMA_VERSION
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    labels: list[str]  # K, in head order; [] for a model without a classification head
    image_size: Side | tuple[Side, Side]  # input H = W, or [H, W]
    patch_size: int = Field(gt=0)  # on the image, or on the backbone's feature map
    backbone: Backbone | None = None  # a hybrid's CNN; None for a plain ViT
    dim: int = Field(gt=0)  # D, the encoder's width
    depth: int = Field(gt=0)
    heads: int = Field(gt=0)
    preprocess: Preprocess
    pixels: PixelFormat = LEGACY_PIXELS  # absent (version 1): float32 NCHW, normalised
    precision: Precision
    graphs: dict[Role, GraphSpec]
    source: Source
    versions: dict[str, str]  # torch / onnx / onnxruntime used by the export
    validation: dict[Role, GraphValidation]
    # absent (versions 1, 2): the [CLS] token of width dim, unnormalised, and its rollout
    embedding: EmbeddingSpec
    attention: AttentionKind = "rollout"

    @model_validator(mode="before")
    @classmethod
    def _legacy_embedding(cls, data: object) -> object:
        """A manifest written before "embedding" published the [CLS] token of width dim."""
        if isinstance(data, dict) and "embedding" not in data and "dim" in data:
            return {**data, "embedding": {"name": LEGACY_EMBEDDING_NAME, "dim": data["dim"]}}
        return data

    @property
    def has_head(self) -> bool:
        """Whether the model classifies: a model without a head answers /embed and /attention."""
        return bool(self.labels)

    @property
    def stride(self) -> int:
        """Input pixels per token side: the backbone's stride times the patch size."""
        return self.patch_size * (self.backbone.stride if self.backbone else 1)

    @model_validator(mode="after")
    def _consistent(self) -> BundleManifest:
        if not fits(self.image_size, self.stride):
            raise ValueError(f"image_size {self.image_size} is not a multiple of {self.stride}")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if FAST not in self.graphs:
            raise ValueError("graphs must include 'fast'")
        for role, graph in self.graphs.items():
            self._check_shapes(role, graph)
        return self

    def _check_shapes(self, role: Role, graph: GraphSpec) -> None:
        """The graph takes INPUT and answers every output its role needs, each shaped as the
        manifest's sizes and labels say (extra outputs are allowed and never fetched)."""
        expected = {  # after the batch axis
            INPUT: self.pixels.shape(self.image_hw),
            LOGITS: [len(self.labels)],
            EMBEDDING: [self.embedding.dim],
            ROLLOUT: [self.num_patches],
            ATTENTION_DISTANCE: [self.depth, self.heads],
        }
        inputs = [t.name for t in graph.inputs]
        if inputs != [INPUT]:
            raise ValueError(f"{role} graph takes inputs {inputs}; the service feeds [{INPUT!r}]")
        missing = [n for n in OUTPUTS[role] if n not in {t.name for t in graph.outputs}]
        if missing:
            raise ValueError(f"{role} graph lacks the output(s) {', '.join(missing)}")
        if graph.inputs[0].dtype != self.pixels.dtype:
            raise ValueError(
                f"{role} graph takes {graph.inputs[0].dtype} pixels, but the manifest's pixels "
                f"say {self.pixels.dtype}"
            )
        for tensor in graph.inputs + graph.outputs:
            want = expected.get(tensor.name)
            if want is not None and tensor.shape[1:] != want:
                raise ValueError(
                    f"{role} graph: {tensor.name} has shape {tensor.shape}, expected [batch, "
                    f"{', '.join(map(str, want))}] from the manifest's sizes and labels"
                )

    def write(self, folder: Path) -> Path:
        path = Path(folder) / MANIFEST
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path


class BundleError(ValueError):
    """A bundle that cannot be served; the message names the file and the problem."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_bundle(folder: str | Path) -> BundleManifest:
    """Read and validate folder/model.json and verify every graph file's sha256.

    Every way a bundle can be unusable (missing, unreadable, invalid, corrupt) is a BundleError
    naming the file, so `vit-serve` can say it in one line instead of a traceback.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        manifest = BundleManifest.model_validate_json(path.read_bytes())
    except FileNotFoundError as e:
        raise BundleError(f"{path}: not found (is {folder} a bundle made by vit-export?)") from e
    except OSError as e:  # permissions, a folder where the file should be, I/O errors
        raise BundleError(f"{path}: cannot be read ({e.strerror or e})") from e
    except ValidationError as e:
        raise BundleError(
            f"{path}: invalid manifest: {describe_validation(e.errors(), limit=10)}"
        ) from e
    for role, graph in manifest.graphs.items():
        file = folder / graph.file
        if not file.is_file():
            raise BundleError(f"{path}: {role} graph {graph.file} is missing")
        try:
            digest = sha256_file(file)
        except OSError as e:
            raise BundleError(f"{file}: cannot be read ({e.strerror or e})") from e
        if digest != graph.sha256:
            raise BundleError(f"{file}: sha256 does not match model.json (corrupt or replaced)")
    return manifest
