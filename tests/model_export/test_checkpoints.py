"""Checkpoint loaders: native, timm and Google .npz round trips, format detection, and refusals.

HuggingFace folders are proven against transformers itself in test_parity_hf.py.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from model_export.formats import infer_heads
from model_export.formats.checkpoints import CheckpointError, load_checkpoint, save_native
from model_export.model.vit import ViT, ViTConfig

Randomise = Callable[..., ViT]
ToTimm = Callable[[ViT], dict[str, torch.Tensor]]
ToNpz = Callable[[ViT], dict[str, np.ndarray]]


def assert_same_model(loaded: ViT, original: ViT, pixels: torch.Tensor) -> None:
    assert not loaded.training
    with torch.no_grad():
        want, got = original(pixels, attention=True), loaded(pixels, attention=True)
    torch.testing.assert_close(got.logits, want.logits, rtol=0, atol=0)
    torch.testing.assert_close(got.embedding, want.embedding, rtol=0, atol=0)
    torch.testing.assert_close(got.attentions, want.attentions, rtol=0, atol=0)


def save_torch(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


# --- native ------------------------------------------------------------------------------------


def test_native_round_trip(tmp_path: Path, random_vit: ViT, pixels: torch.Tensor) -> None:
    folder = save_native(random_vit, tmp_path / "native")
    loaded = load_checkpoint(folder)
    assert loaded.format == "native"
    loaded = loaded.model
    assert loaded.config == random_vit.config
    assert_same_model(loaded, random_vit, pixels)


# --- timm --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "wrap"),
    [
        (".safetensors", lambda sd: sd),
        (".pth", lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}),
        (".bin", lambda sd: {"model": {f"_orig_mod.{k}": v for k, v in sd.items()}}),
    ],
    ids=["safetensors", "pth-wrapped-ddp", "bin-wrapped-compiled"],
)
def test_timm_round_trip(
    tmp_path: Path,
    random_vit: ViT,
    pixels: torch.Tensor,
    to_timm: ToTimm,
    suffix: str,
    wrap: Callable[[dict[str, torch.Tensor]], object],
) -> None:
    path = tmp_path / f"vit{suffix}"
    if suffix == ".safetensors":
        save_file(to_timm(random_vit), str(path))
    else:
        save_torch(wrap(to_timm(random_vit)), path)
    loaded = load_checkpoint(path, heads=4)  # width 32 is no standard size: heads must be given
    assert loaded.format == "timm"
    loaded = loaded.model
    c = loaded.config
    assert (c.eps, c.gelu, c.resize_mode, c.crop_pct, c.interpolation) == (
        1e-6, "erf", "crop", 0.9, "bicubic",
    )  # fmt: skip
    assert c.labels == ()  # a bare timm file carries no class names
    assert_same_model(loaded, random_vit, pixels)


def test_timm_representation_layer(
    tmp_path: Path,
    pixels: torch.Tensor,
    to_timm: ToTimm,
    randomise: Randomise,
    tiny_config: ViTConfig,
) -> None:
    original = randomise(ViT(replace(tiny_config, representation_size=16, labels=())))
    state = to_timm(original)
    assert "pre_logits.fc.weight" in state
    loaded = load_checkpoint(save_torch(state, tmp_path / "vit.pt"), format="timm", heads=4).model
    assert loaded.config.representation_size == 16
    assert_same_model(loaded, original, pixels)


def test_timm_hub_folder_reads_its_sidecar(
    tmp_path: Path, random_vit: ViT, pixels: torch.Tensor, to_timm: ToTimm
) -> None:
    labels = random_vit.config.labels
    folder = tmp_path / "hub"
    folder.mkdir()
    save_file(to_timm(random_vit), str(folder / "model.safetensors"))
    sidecar = {
        "architecture": "vit_tiny_test",
        "num_classes": 5,
        "global_pool": "token",
        "model_args": {"num_heads": 4},
        "pretrained_cfg": {
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "interpolation": "bilinear",
            "crop_pct": 0.875,
            "crop_mode": "center",
        },
        "label_names": list(labels),
    }
    (folder / "config.json").write_text(json.dumps(sidecar))
    loaded = load_checkpoint(folder)
    assert loaded.format == "timm"
    loaded = loaded.model
    c = loaded.config
    assert (c.heads, c.labels, c.interpolation, c.crop_pct) == (4, labels, "bilinear", 0.875)
    assert (c.mean, c.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert_same_model(loaded, random_vit, pixels)


@pytest.mark.parametrize(
    ("dim", "heads"),
    [(192, 3), (384, 6), (768, 12), (1024, 16), (1280, 16), (512, 8), (128, 2)],
)
def test_heads_follow_the_paper_table_then_the_d64_rule(dim: int, heads: int) -> None:
    assert infer_heads(dim) == heads


def test_timm_heads_inferred_for_a_standard_width(
    tmp_path: Path, to_timm: ToTimm, randomise: Randomise
) -> None:
    config = ViTConfig(image_size=16, patch_size=8, dim=192, depth=1, heads=3, mlp_dim=16)
    original = randomise(ViT(config))
    loaded = load_checkpoint(save_torch(to_timm(original), tmp_path / "ti.pth")).model
    assert loaded.config.heads == 3
    assert_same_model(loaded, original, torch.randn(1, 3, 16, 16))


def test_timm_width_without_a_rule_asks_for_heads(
    tmp_path: Path, random_vit: ViT, to_timm: ToTimm
) -> None:
    path = save_torch(to_timm(random_vit), tmp_path / "vit.pth")
    with pytest.raises(CheckpointError, match=r"width 32.*pass heads="):
        load_checkpoint(path)


def _resnet() -> dict[str, torch.Tensor]:
    return {
        "conv1.weight": torch.zeros(8, 3, 7, 7),
        "bn1.weight": torch.zeros(8),
        "layer1.0.conv1.weight": torch.zeros(8, 8, 3, 3),
        "fc.weight": torch.zeros(10, 8),
    }


def _edited(add: dict[str, torch.Tensor], drop: tuple[str, ...] = ()) -> Callable[[ViT], dict]:
    def edit(model: ViT) -> dict[str, torch.Tensor]:
        sd = {k: v for k, v in model.state_dict().items() if k not in drop}
        return {**sd, **add}

    return edit


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda m: _resnet(), r"format 'timm' does not fit .*; its keys: bn1\.weight, conv1"),
        (_edited({}, drop=("cls_token",)), "no class token and no attention-pool head"),
        (_edited({"fc_norm.weight": torch.ones(32)}), "global-average-pool head"),
        (_edited({"blocks.0.attn.q_norm.weight": torch.ones(8)}), "QK-norm"),
        (_edited({"attn_pool.latent": torch.zeros(1, 2, 32)}), "several latent queries"),
        (_edited({"pos_embed": torch.zeros(1, 16, 32)}), r"pos_embed \(1, 16, 32\).*--grid"),
    ],
    ids=["resnet", "no-cls", "gap-head", "qk-norm", "latents", "no-cls-pos"],
)
def test_timm_refuses_what_this_vit_does_not_compute(
    tmp_path: Path, random_vit: ViT, make: Callable[[ViT], dict], message: str
) -> None:
    path = save_torch(make(random_vit), tmp_path / "model.pth")
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path, format="timm", heads=4)


# --- Google .npz -------------------------------------------------------------------------------


@pytest.mark.parametrize("representation_size", [None, 24])
def test_npz_round_trip(
    tmp_path: Path,
    pixels: torch.Tensor,
    to_npz: ToNpz,
    randomise: Randomise,
    tiny_config: ViTConfig,
    representation_size: int | None,
) -> None:
    config = replace(tiny_config, gelu="tanh", representation_size=representation_size, labels=())
    original = randomise(ViT(config))
    path = tmp_path / "ViT-T_8.npz"
    np.savez(path, **to_npz(original))
    loaded = load_checkpoint(path)
    assert loaded.format == "npz"
    loaded = loaded.model
    c = loaded.config
    assert (c.heads, c.gelu, c.eps, c.representation_size) == (4, "tanh", 1e-6, representation_size)
    assert (c.interpolation, c.resize_mode) == ("bilinear", "squash")
    assert_same_model(loaded, original, pixels)


def flax_vit(a: dict[str, np.ndarray], images: np.ndarray) -> np.ndarray:
    """Google's ViT written straight from the Flax arrays' semantics, in float64 numpy.

    Independent of our mapping: kernels are used as Flax uses them ((in, out), per-head
    einsums, HWIO conv), so a wrong transpose in from_npz cannot agree with it by accident.
    images: (B, H, W, C), Flax's layout.
    """
    a = {k: v.astype(np.float64) for k, v in a.items()}

    def ln(x: np.ndarray, p: str) -> np.ndarray:
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-6) * a[f"{p}/scale"] + a[f"{p}/bias"]

    def gelu(x: np.ndarray) -> np.ndarray:  # flax.linen.gelu, approximate=True
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))

    kernel = a["embedding/kernel"]  # (P, P, C, D)
    p = kernel.shape[0]
    b, h, w, c = images.shape
    patches = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    x = np.einsum("bijpqc,pqcd->bijd", patches, kernel).reshape(b, -1, kernel.shape[-1])
    x = x + a["embedding/bias"]
    cls = np.broadcast_to(a["cls"], (b, 1, x.shape[-1]))
    x = np.concatenate([cls, x], axis=1) + a["Transformer/posembed_input/pos_embedding"]
    i = 0
    while f"Transformer/encoderblock_{i}/LayerNorm_0/scale" in a:
        blk = f"Transformer/encoderblock_{i}/"
        mha = blk + "MultiHeadDotProductAttention_1/"
        y = ln(x, blk + "LayerNorm_0")
        q, k, v = (
            np.einsum("bnd,dhk->bnhk", y, a[f"{mha}{n}/kernel"]) + a[f"{mha}{n}/bias"]
            for n in ("query", "key", "value")
        )
        scores = np.einsum("bqhk,bshk->bhqs", q, k) / math.sqrt(q.shape[-1])
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        o = np.einsum("bhqs,bshk->bqhk", weights, v)
        x = x + np.einsum("bqhk,hkd->bqd", o, a[f"{mha}out/kernel"]) + a[f"{mha}out/bias"]
        y = ln(x, blk + "LayerNorm_2")
        mlp = blk + "MlpBlock_3/"
        y = gelu(y @ a[f"{mlp}Dense_0/kernel"] + a[f"{mlp}Dense_0/bias"])
        x = x + y @ a[f"{mlp}Dense_1/kernel"] + a[f"{mlp}Dense_1/bias"]
        i += 1
    y = ln(x[:, 0], "Transformer/encoder_norm")
    if "pre_logits/kernel" in a:
        y = np.tanh(y @ a["pre_logits/kernel"] + a["pre_logits/bias"])
    return y @ a["head/kernel"] + a["head/bias"]


@pytest.mark.parametrize("representation_size", [None, 24])
def test_npz_matches_a_flax_reference(
    tmp_path: Path,
    pixels: torch.Tensor,
    to_npz: ToNpz,
    randomise: Randomise,
    tiny_config: ViTConfig,
    representation_size: int | None,
) -> None:
    config = replace(tiny_config, gelu="tanh", representation_size=representation_size, labels=())
    arrays = to_npz(randomise(ViT(config), seed=7))
    np.savez(tmp_path / "vit.npz", **arrays)
    with torch.no_grad():
        got = load_checkpoint(tmp_path / "vit.npz").model(pixels).logits.numpy()
    want = flax_vit(arrays, pixels.permute(0, 2, 3, 1).numpy())  # NCHW -> NHWC
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-5


def test_npz_names_missing_and_unexpected_arrays(
    tmp_path: Path, random_vit: ViT, to_npz: ToNpz
) -> None:
    arrays = to_npz(random_vit)
    del arrays["Transformer/encoderblock_1/MlpBlock_3/Dense_0/bias"]
    arrays["Transformer/encoderblock_0/extra/kernel"] = np.zeros(3)
    np.savez(tmp_path / "vit.npz", **arrays)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "vit.npz")
    assert "missing arrays: Transformer/encoderblock_1/MlpBlock_3/Dense_0/bias" in str(err.value)
    assert "unexpected arrays: Transformer/encoderblock_0/extra/kernel" in str(err.value)


def test_npz_refuses_pickled_object_arrays(tmp_path: Path, random_vit: ViT, to_npz: ToNpz) -> None:
    arrays = {**to_npz(random_vit), "cls": np.array([{"a": 1}], dtype=object)}
    np.savez(tmp_path / "vit.npz", **arrays)
    with pytest.raises(CheckpointError, match="not a readable .npz"):
        load_checkpoint(tmp_path / "vit.npz")


def test_npz_that_is_not_a_vit(tmp_path: Path) -> None:
    np.savez(tmp_path / "resnet.npz", **{"conv_root/kernel": np.zeros((7, 7, 3, 8))})
    with pytest.raises(
        CheckpointError, match=r"not a checkpoint of a known format \(hf, timm, npz"
    ):
        load_checkpoint(tmp_path / "resnet.npz")


# --- safety and errors -------------------------------------------------------------------------


class _Payload:
    """Unpickling this calls os.mkdir(marker): harmless, but proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return os.mkdir, (str(self.marker),)


def test_pickle_with_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    path = save_torch(
        {"pos_embed": torch.zeros(1), "payload": _Payload(marker)}, tmp_path / "x.pth"
    )
    with pytest.raises(CheckpointError, match=r"refused: it pickles code \(posix\.mkdir\)"):
        load_checkpoint(path, format="timm")
    assert not marker.exists()
    # The payload is live: an unsafe load runs it, so the refusal is what kept it from running.
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "vit.safetensors",
            b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}",
            "not a readable safetensors",
        ),
        ("vit.safetensors", b"garbage", "not a readable safetensors"),
        ("vit.pth", b"not a pickle at all", "vit.pth: refused: corrupt"),
        ("vit.bin", b"", "vit.bin: not a readable PyTorch file"),
        ("vit.onnx", b"\x08\x07", "unknown checkpoint type"),
    ],
    ids=["corrupt-header", "too-short", "pth-garbage", "bin-empty", "unknown-suffix"],
)
def test_unreadable_files(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / name)


def test_truncated_pth(tmp_path: Path, random_vit: ViT, to_timm: ToTimm) -> None:
    whole = save_torch(to_timm(random_vit), tmp_path / "whole.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(
        CheckpointError, match="cut.pth: not a readable PyTorch file, corrupt or trunc"
    ):
        load_checkpoint(tmp_path / "cut.pth", heads=4)


def test_torch_file_without_a_state_dict(tmp_path: Path) -> None:
    path = save_torch({"epoch": 3, "note": "no weights here"}, tmp_path / "run.pth")
    with pytest.raises(CheckpointError, match="holds no state dict of tensors"):
        load_checkpoint(path, format="timm")


def test_unknown_format_and_missing_path(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="unknown format 'keras'; choose from auto, hf"):
        load_checkpoint(tmp_path, format="keras")
    with pytest.raises(CheckpointError, match="nothing-here: no such file or folder"):
        load_checkpoint(tmp_path / "nothing-here")


def test_folders_that_are_not_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="needs a config.json"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "swin"}))
    with pytest.raises(CheckpointError, match="model_type 'swin' is none of 'vit', 'deit'"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"layers": 3}))
    with pytest.raises(CheckpointError, match="neither a HF, timm nor native config"):
        load_checkpoint(tmp_path)


def test_missing_and_unexpected_keys_are_named(
    tmp_path: Path, random_vit: ViT, to_timm: ToTimm
) -> None:
    state = to_timm(random_vit)
    del state["blocks.1.mlp.fc2.weight"]
    state["blocks.1.mlp.fc3.weight"] = torch.zeros(2)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(save_torch(state, tmp_path / "vit.pth"), heads=4)
    assert "missing keys: blocks.1.mlp.fc2.weight" in str(err.value)
    assert "unexpected keys: blocks.1.mlp.fc3.weight" in str(err.value)


def test_config_that_does_not_fit_the_weights(tmp_path: Path, random_vit: ViT) -> None:
    folder = save_native(random_vit, tmp_path / "native")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "mlp_dim": 48}))
    with pytest.raises(CheckpointError, match=r"mis-shaped keys: blocks\.0\.mlp\.fc1\.weight: "
                       r"checkpoint \(64, 32\) vs model \(48, 32\)"):  # fmt: skip
        load_checkpoint(folder)
    (folder / "config.json").write_text(json.dumps({**config, "heads": 5}))
    with pytest.raises(CheckpointError, match="dim 32 is not divisible by heads 5"):
        load_checkpoint(folder)


def test_heads_that_do_not_divide_or_disagree(
    tmp_path: Path, random_vit: ViT, to_timm: ToTimm
) -> None:
    path = save_torch(to_timm(random_vit), tmp_path / "vit.pth")
    with pytest.raises(CheckpointError, match="dim 32 is not divisible by heads 5"):
        load_checkpoint(path, heads=5)
    with pytest.raises(CheckpointError, match="heads=2 was given but .* has 4 heads"):
        load_checkpoint(save_native(random_vit, tmp_path / "native"), heads=2)
