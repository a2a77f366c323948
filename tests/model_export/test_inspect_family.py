"""vit-inspect on the family: the grid is the patches' alone (registers, class and distillation
tokens never on it), from a checkpoint and from its bundle alike; SigLIP's map is its pooling
head's attention, and its position embeddings have no class row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.model_export.family import bundle
from tests.model_export.inspect_runs import image_folder, run


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return image_folder(tmp_path_factory.mktemp("images"))


@pytest.mark.parametrize("name", ["dinov2", "siglip", "deit"])
def test_a_member_inspects_the_same_from_checkpoint_and_bundle(
    name: str, images: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    checkpoint, exported = bundle(name, tmp_path_factory.getbasetemp())
    reports = [run(path, images, tmp_path / kind) for kind, path in
               (("checkpoint", checkpoint), ("bundle", exported))]  # fmt: skip
    for report in reports:
        assert report["grid"] == [4, 4]
        assert np.asarray(report["position_similarity"]).shape == (16, 16)  # patches only
        assert np.asarray(report["attention_distance"]).shape == (2, 4)
        assert all(np.asarray(r["map"]).shape == (4, 4) for r in report["rollout"])
    a, b = (np.asarray(r["position_similarity"]) for r in reports)
    np.testing.assert_allclose(a, b, atol=1e-5)
    a, b = (np.asarray(r["attention_distance"]) for r in reports)
    np.testing.assert_allclose(a, b, rtol=1e-3)
