"""The decode path under fuzzing: hostile bytes (see mutations.py) through the Preprocessor the
service runs on every request. Each input is refused with one of the service's own 4xx errors
or becomes finite (3, S, S) float32 pixels; anything else (a PIL exception escaping, a crash, a
NaN, a wrong shape) is a bug. Bounded by the Hypothesis profile (tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from fuzz.mutations import CORPUS, hostile_images
from service.settings import Settings
from vit_core.bundle import Preprocess
from vit_core.errors import ServiceError
from vit_core.images import Preprocessor

S = 32
MAX_PIXELS = Settings.model_fields["max_image_pixels"].default  # what the service refuses above
PREPROCESS = st.builds(
    Preprocess,
    mean=st.just((0.485, 0.456, 0.406)),
    std=st.just((0.229, 0.224, 0.225)),
    interpolation=st.sampled_from(["bicubic", "bilinear", "nearest"]),
    resize_mode=st.sampled_from(["squash", "crop"]),
    crop_pct=st.sampled_from([0.875, 1.0]),
)


def check(data: bytes, preprocess: Preprocess, scaled: bool) -> str:
    """Run the property on one input; returns what happened ("decoded" or the error code).
    scaled: JPEGs at a DCT scale (the default), or in full (VIT_EXACT_DECODE=true)."""
    try:
        prepared = Preprocessor(preprocess, S, MAX_PIXELS, scaled_decode=scaled)(data)
    except ServiceError as e:
        assert 400 <= e.status < 500, f"{type(e).__name__} is a {e.status}: {e.message}"
        return e.code
    assert prepared.pixels.shape == (3, S, S)
    assert prepared.pixels.dtype == np.float32
    assert np.isfinite(prepared.pixels).all()
    return "decoded"


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_every_corpus_file_decodes(name: str) -> None:
    """The seeds are valid, so the fuzz starts from the success path, not from the door."""
    for mode in ("squash", "crop"):
        preprocess = Preprocess(
            mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bilinear", resize_mode=mode,
            crop_pct=0.875,
        )  # fmt: skip
        assert check(CORPUS[name], preprocess, scaled=False) == "decoded"
        assert check(CORPUS[name], preprocess, scaled=True) == "decoded"


@pytest.mark.filterwarnings(  # PIL's notes on a bad header: expected here, the errors are not
    "ignore::UserWarning:PIL", "ignore::PIL.Image.DecompressionBombWarning"
)
@given(data=hostile_images(), preprocess=PREPROCESS, scaled=st.booleans())
def test_hostile_bytes_get_a_4xx_or_finite_pixels(
    data: bytes, preprocess: Preprocess, scaled: bool
) -> None:
    event(check(data, preprocess, scaled))  # the outcome mix: pytest --hypothesis-show-statistics
