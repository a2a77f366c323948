"""The format registry: each adapter claims its own checkpoints and no other's, keys are read
without tensors, the chosen format is reported, and a contradicting --format is one clear error.

Every format has a fixture here, the family members' too (their parity with the code that wrote
them is in test_parity_family_hf.py and test_parity_family_timm.py).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
    DeiTConfig,
    DeiTForImageClassificationWithTeacher,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    SiglipVisionConfig,
    SiglipVisionModel,
    ViTForImageClassification,
)
from transformers import ViTConfig as HFConfig

from model_export.export.exporter import main as export_main
from model_export.formats import ADAPTERS, FORMATS, detect_format, open_checkpoint
from model_export.formats.checkpoints import CheckpointError, load_checkpoint, save_native
from model_export.model.vit import ViT, ViTConfig
from tests.model_export.conftest import _randomise
from tests.model_export.flax_layouts import hybrid_npz, to_linen

ToTimm = Callable[[ViT], dict[str, torch.Tensor]]
ToNpz = Callable[[ViT], dict[str, np.ndarray]]
Make = Callable[[Path, ViT, ToTimm, ToNpz], Path]


def _hf_folder(folder: Path, vit: ViT, to_timm: ToTimm, to_npz: ToNpz) -> Path:
    c = vit.config
    hf = ViTForImageClassification(
        HFConfig(
            image_size=c.image_size, patch_size=c.patch_size, hidden_size=c.dim,
            num_hidden_layers=c.depth, num_attention_heads=c.heads,
            intermediate_size=c.mlp_dim, num_labels=c.num_classes,
        )
    )  # fmt: skip
    hf.save_pretrained(folder)
    return folder


def _hf_file(folder: Path, vit: ViT, to_timm: ToTimm, to_npz: ToNpz) -> Path:
    state = load_file(_hf_folder(folder / "hf", vit, to_timm, to_npz) / "model.safetensors")
    folder.joinpath("bare").mkdir()
    torch.save(state, folder / "bare" / "vit.pth")
    return folder / "bare" / "vit.pth"


def _timm_file(folder: Path, vit: ViT, to_timm: ToTimm, to_npz: ToNpz) -> Path:
    save_file(to_timm(vit), str(folder / "vit.safetensors"))
    return folder / "vit.safetensors"


def _timm_ddp_pth(folder: Path, vit: ViT, to_timm: ToTimm, to_npz: ToNpz) -> Path:
    state = {f"module.{k}": v for k, v in to_timm(vit).items()}
    torch.save({"state_dict": state, "epoch": 3}, folder / "vit.pth")
    return folder / "vit.pth"


def _timm_folder(folder: Path, vit: ViT, to_timm: ToTimm, to_npz: ToNpz) -> Path:
    save_file(to_timm(vit), str(folder / "model.safetensors"))
    sidecar = {"architecture": "vit_tiny_test", "model_args": {"num_heads": vit.config.heads}}
    (folder / "config.json").write_text(json.dumps(sidecar))
    return folder


def _npz(folder: Path, vit: ViT, to_timm: ToTimm, to_npz: ToNpz) -> Path:
    np.savez(folder / "vit.npz", **to_npz(vit))
    return folder / "vit.npz"


def _native(folder: Path, vit: ViT, to_timm: ToTimm, to_npz: ToNpz) -> Path:
    return save_native(vit, folder / "native")


def _hybrid(vit: ViT) -> ViT:
    """vit's sizes on a ResNet stem (stride 4) with 2×2 patches on its map."""
    config = ViTConfig.from_dict({**vit.config.to_dict(), "patch_size": 2, "backbone": ()})
    return _randomise(ViT(config))


def _timm_hybrid_file(folder: Path, vit: ViT, to_timm: ToTimm, to_npz: ToNpz) -> Path:
    # timm's stem-only layout: the stem's conv and norm sit right under patch_embed.backbone.
    state = {k.replace(".stem.", "."): v for k, v in to_timm(_hybrid(vit)).items()}
    save_file(state, str(folder / "hybrid.safetensors"))
    return folder / "hybrid.safetensors"


def _npz_linen(folder: Path, vit: ViT, to_timm: ToTimm, to_npz: ToNpz) -> Path:
    np.savez(folder / "vit.npz", **to_linen(to_npz(vit)))
    return folder / "vit.npz"


def _npz_hybrid(folder: Path, vit: ViT, to_timm: ToTimm, to_npz: ToNpz) -> Path:
    np.savez(folder / "hybrid.npz", **hybrid_npz(_hybrid(vit)))
    return folder / "hybrid.npz"


def _native_hybrid(folder: Path, vit: ViT, to_timm: ToTimm, to_npz: ToNpz) -> Path:
    return save_native(_hybrid(vit), folder / "native")


SMALL = dict(  # the family members at the random ViT's sizes
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
    image_size=32, patch_size=8,
)  # fmt: skip


def _transformers(model: nn.Module) -> Callable[[Path, ViT, ToTimm, ToNpz], Path]:
    """A maker that saves a transformers family member as transformers does."""

    def make(folder: Path, vit: ViT, to_timm: ToTimm, to_npz: ToNpz) -> Path:
        model.save_pretrained(folder / "hf")
        return folder / "hf"

    return make


def _bare(make_folder: Make) -> Make:
    """The folder's weights alone, without config.json: what detection sees of a lone file."""

    def make(folder: Path, vit: ViT, to_timm: ToTimm, to_npz: ToNpz) -> Path:
        state = load_file(make_folder(folder, vit, to_timm, to_npz) / "model.safetensors")
        folder.joinpath("bare").mkdir()
        save_file(state, str(folder / "bare" / "weights.safetensors"))
        return folder / "bare" / "weights.safetensors"

    return make


def _dinov2_own(folder: Path, vit: ViT, to_timm: ToTimm, to_npz: ToNpz) -> Path:
    # facebookresearch/dinov2's names: timm's, with its mask token and LayerScale gammas
    config = ViTConfig.from_dict({**vit.config.to_dict(), "layer_scale": 1.0})
    state = {**_randomise(ViT(config)).state_dict(), "mask_token": torch.zeros(1, 32)}
    torch.save(state, folder / "dinov2_vits14_pretrain.pth")
    return folder / "dinov2_vits14_pretrain.pth"


def _open_clip(folder: Path, vit: ViT, to_timm: ToTimm, to_npz: ToNpz) -> Path:
    from tests.model_export.test_parity_family_timm import timm_model, to_open_clip

    state = to_open_clip(timm_model("clip", _randomise))
    folder.joinpath("open_clip").mkdir()
    save_file(state, str(folder / "open_clip" / "open_clip_model.safetensors"))
    sidecar = {"model_cfg": {"quick_gelu": True, "vision_cfg": {"head_width": 8}}}
    (folder / "open_clip" / "open_clip_config.json").write_text(json.dumps(sidecar))
    return folder / "open_clip"


def _bare_open_clip(folder: Path, vit: ViT, to_timm: ToTimm, to_npz: ToNpz) -> Path:
    state = load_file(_open_clip(folder, vit, to_timm, to_npz) / "open_clip_model.safetensors")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, folder / "oc.pt")
    return folder / "oc.pt"  # an open_clip training checkpoint: wrapped, DDP prefixes


_DEIT = _transformers(DeiTForImageClassificationWithTeacher(DeiTConfig(**SMALL, num_labels=5)))
_DINOV2 = _transformers(Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**SMALL)))
_CLIP = _transformers(CLIPVisionModelWithProjection(CLIPVisionConfig(**SMALL, projection_dim=16)))
_SIGLIP = _transformers(SiglipVisionModel(SiglipVisionConfig(**SMALL)))

FIXTURES: dict[str, tuple[str, Make]] = {  # id: (the adapter that must claim it, maker)
    "hf-folder": ("hf", _hf_folder),
    "hf-bare-file": ("hf", _hf_file),
    "timm-safetensors": ("timm", _timm_file),
    "timm-ddp-pth": ("timm", _timm_ddp_pth),
    "timm-hub-folder": ("timm", _timm_folder),
    "npz": ("npz", _npz),
    "native": ("native", _native),
    "timm-hybrid-file": ("timm-hybrid", _timm_hybrid_file),
    "npz-linen": ("npz-linen", _npz_linen),
    "npz-hybrid": ("npz-hybrid", _npz_hybrid),
    "native-hybrid": ("native", _native_hybrid),
    "hf-deit-folder": ("hf-deit", _DEIT),
    "hf-deit-bare-file": ("hf-deit", _bare(_DEIT)),
    "hf-dinov2-folder": ("hf-dinov2", _DINOV2),
    "hf-dinov2-bare-file": ("hf-dinov2", _bare(_DINOV2)),
    "hf-clip-folder": ("hf-clip", _CLIP),
    "hf-clip-bare-file": ("hf-clip", _bare(_CLIP)),
    "hf-siglip-folder": ("hf-siglip", _SIGLIP),
    "hf-siglip-bare-file": ("hf-siglip", _bare(_SIGLIP)),
    "dinov2-own-pth": ("dinov2", _dinov2_own),
    "open-clip-folder": ("open-clip", _open_clip),
    "open-clip-bare-file": ("open-clip", _bare_open_clip),
}


@pytest.fixture(params=FIXTURES)
def fixture(
    request: pytest.FixtureRequest, tmp_path: Path, random_vit: ViT, to_timm: ToTimm, to_npz: ToNpz
) -> tuple[str, Path]:
    owner, make = FIXTURES[request.param]
    return owner, make(tmp_path, random_vit, to_timm, to_npz)


def test_each_adapter_detects_its_own_checkpoints_and_no_others(fixture: tuple[str, Path]) -> None:
    owner, path = fixture
    checkpoint = open_checkpoint(path)
    claims = [a.name for a in ADAPTERS if a.detect(checkpoint.keys, checkpoint.files)]
    assert claims == [owner]


def test_every_format_has_fixtures() -> None:
    assert {owner for owner, _ in FIXTURES.values()} == set(FORMATS) - {"auto"}


def test_load_checkpoint_reports_the_format_it_read(fixture: tuple[str, Path]) -> None:
    owner, path = fixture
    loaded = load_checkpoint(path, heads=4)
    assert loaded.format == owner
    assert load_checkpoint(path, format=owner, heads=4).format == owner
    assert loaded.model.config.dim == 32 and not loaded.model.training


@pytest.mark.parametrize(
    ("make", "format", "reads_as"),
    [(_native, "timm", "native"), (_timm_file, "npz", "timm"), (_npz, "hf", "npz"),
     (_hf_folder, "native", "hf"), (_timm_folder, "hf", "timm")],
)  # fmt: skip
def test_a_format_that_contradicts_the_checkpoint(
    tmp_path: Path,
    random_vit: ViT,
    to_timm: ToTimm,
    to_npz: ToNpz,
    make: Make,
    format: str,
    reads_as: str,
) -> None:
    path = make(tmp_path, random_vit, to_timm, to_npz)
    message = f"format '{format}' does not fit this checkpoint; it reads as '{reads_as}'"
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path, format=format, heads=4)


def test_vit_export_names_a_contradicting_format_in_one_line(
    tmp_path: Path, random_vit: ViT, to_timm: ToTimm, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _timm_ddp_pth(tmp_path, random_vit, to_timm, lambda m: {})
    assert export_main([str(path), "--out", str(tmp_path / "b"), "--format", "npz"]) == 2
    message = f"{path}: format 'npz' does not fit this checkpoint; it reads as 'timm'"
    assert capsys.readouterr().err == f"vit-export: error: {message}\n"
    assert not (tmp_path / "b").exists()


def _with_an_unreadable_tensor(path: Path, state: dict[str, torch.Tensor]) -> None:
    """A safetensors file of state plus one tensor whose dtype torch cannot hold.

    safetensors accepts the header (F6_E2M3, 6-bit floats, is in its spec), so the key names list;
    but building that tensor fails, so any reader that loads the tensors fails on this file.
    """
    header: dict[str, dict[str, object]] = {}
    data = b""
    for name, tensor in state.items():
        blob = tensor.float().contiguous().numpy().tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(tensor.shape),
            "data_offsets": [len(data), len(data) + len(blob)],
        }
        data += blob
    header["blocks.0.extra"] = {
        "dtype": "F6_E2M3",
        "shape": [8],
        "data_offsets": [len(data), len(data) + 6],
    }
    data += bytes(6)  # 8 values × 6 bits
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)  # the format aligns the data to 8 bytes
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def test_safetensors_keys_are_read_without_loading_the_tensors(
    tmp_path: Path, random_vit: ViT, to_timm: ToTimm
) -> None:
    path = tmp_path / "vit.safetensors"
    _with_an_unreadable_tensor(path, to_timm(random_vit))
    checkpoint = open_checkpoint(path)  # would fail here if it loaded a single tensor
    assert "blocks.0.extra" in checkpoint.keys
    assert detect_format(path) == "timm"
    with pytest.raises(CheckpointError, match=r"vit\.safetensors: not a readable safetensors file"):
        load_checkpoint(path, heads=4)


def test_tensors_are_read_at_load_time_from_the_file(
    tmp_path: Path, random_vit: ViT, to_timm: ToTimm
) -> None:
    path = _timm_file(tmp_path, random_vit, to_timm, lambda m: {})
    checkpoint = open_checkpoint(path)  # detection's view: the header, no tensor data
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - 1024])  # truncated after detection, before loading
    with pytest.raises(CheckpointError, match=r"vit\.safetensors: not a readable safetensors"):
        checkpoint.tensors()
    with pytest.raises(CheckpointError, match=r"vit\.safetensors: not a readable safetensors"):
        load_checkpoint(path, heads=4)  # a truncated download: one precise error


def test_a_torch_file_is_unpickled_once(tmp_path: Path, random_vit: ViT, to_timm: ToTimm) -> None:
    path = _timm_ddp_pth(tmp_path, random_vit, to_timm, lambda m: {})
    checkpoint = open_checkpoint(path)  # loads the pickle to learn its keys ...
    path.unlink()
    state = checkpoint.tensors()  # ... and hands that load on: the file is not read again
    assert set(state) == checkpoint.keys and "module.cls_token" in state
