"""vit-train fine-tunes each family member with the paper's recipe: a zero-initialised head on
the embedding the member publishes (DeiT's token mean, DINOv2's class token, CLIP's normalised
projection, SigLIP's pooled output), its own tokens and numerics kept."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model_export.demo.shapes import CLASSES, generate
from model_export.formats.checkpoints import load_checkpoint, load_native
from model_export.training.cli import main
from model_export.training.recipe import prepare_for_finetune
from tests.model_export.family import MEMBERS

FAST = ["--steps", "2", "--batch-size", "6", "--micro-batch", "6", "--warmup-steps", "1"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    generate(root, n_per_class=3, seed=0, size=32, fmt="png")
    return root


@pytest.mark.parametrize("name", MEMBERS)
def test_the_new_head_reads_the_published_embedding(name: str, tmp_path: Path) -> None:
    member = MEMBERS[name]
    model = load_checkpoint(member.write(tmp_path / name)).model
    published = model.config.embedding_name
    model = prepare_for_finetune(model, CLASSES)
    _, width, normalized = member.embedding
    assert model.head.weight.shape == (len(CLASSES), width) and not model.head.weight.any()
    assert model.head_dist is None and model.config.embedding_name == published
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    torch.testing.assert_close(out.logits.softmax(-1), torch.full((2, 6), 1 / 6))
    torch.testing.assert_close(model.head(out.embedding), out.logits)
    out.logits.logsumexp(-1).sum().backward()  # the head's gradient is its input: e, not zero
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0
    if normalized:
        torch.testing.assert_close(out.embedding.norm(dim=-1), torch.ones(2))


@pytest.mark.parametrize("name", MEMBERS)
def test_vit_train_fine_tunes_each_member(name: str, shapes: Path, tmp_path: Path) -> None:
    member = MEMBERS[name]
    checkpoint = member.write(tmp_path / "checkpoint")
    out = tmp_path / "run"
    main([str(shapes), "--checkpoint", str(checkpoint), "--out", str(out), "--quiet",
          "--threads", "1", "--val-fraction", "0.34", *FAST])  # fmt: skip
    tuned, source = load_native(out), load_checkpoint(checkpoint).model.config
    c = tuned.config
    assert c.labels == tuple(sorted(CLASSES)) and tuned.head.weight.abs().sum() > 0
    assert (c.embedding_name, c.embed_dim, c.normalize) == member.embedding
    assert (c.prefix_tokens, c.pool, c.gelu, c.eps) == (
        member.prefix_tokens, source.pool, source.gelu, source.eps
    )  # fmt: skip
