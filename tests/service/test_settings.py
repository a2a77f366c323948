"""Settings: VIT_* variables, vit-serve flags, and messages that name the bad setting."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service import engine_process
from service.engine_process import decode_threads
from service.settings import Settings, describe, memory_budgets, unknown_variables


def test_environment_is_read_with_the_vit_prefix(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIT_BUNDLE", str(tiny_bundle))
    monkeypatch.setenv("VIT_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("VIT_API_KEY", "s3cret")
    settings = Settings()
    assert settings.bundle == tiny_bundle and settings.max_batch_size == 8
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_flags_win_over_the_environment(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIT_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("VIT_PORT", "9000")
    settings = Settings.from_cli(
        ["--bundle", str(tiny_bundle), "--max-batch-size", "4", "--providers", "cpu"]
    )
    assert (settings.max_batch_size, settings.port, settings.providers) == (4, 9000, "cpu")


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--max-batch-size", "0"], "invalid setting max_batch_size (--max-batch-size / "
         "VIT_MAX_BATCH_SIZE): Input should be greater than or equal to 1"),
        (["--port", "http"], "invalid setting port (--port / VIT_PORT)"),
        (["--providers", "gpu"], "invalid setting providers"),
        (["--max-wait-ms", "-1"], "invalid setting max_wait_ms"),
        (["--workers", "0"], "invalid setting workers"),
        (["--max-images-per-request", "300"], "exceeds max_queue_images (256)"),
    ],
)  # fmt: skip
def test_invalid_values_are_named(tiny_bundle: Path, flags: list[str], named: str) -> None:
    with pytest.raises(ValidationError) as e:
        Settings.from_cli(["--bundle", str(tiny_bundle), *flags])
    assert named in describe(e.value)


def test_a_folder_without_model_json_is_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as e:
        Settings(bundle=tmp_path)
    assert "invalid setting bundle (--bundle / VIT_BUNDLE)" in describe(e.value)
    assert "holds no model.json" in describe(e.value)


def test_misspelt_variables_are_found_with_a_suggestion() -> None:
    environ = {"VIT_MAX_BATCH": "8", "VIT_PORT": "1", "VIT_SERVICE_HOST": "10.0.0.1", "HOME": "/"}
    found = unknown_variables(environ)
    assert found[0] == "VIT_MAX_BATCH (did you mean VIT_MAX_BATCH_SIZE?)"
    assert len(found) == 2 and found[1].startswith("VIT_SERVICE_HOST")


def test_defaults_match_the_contract() -> None:
    d = Settings.model_construct()  # defaults without the bundle check
    assert (d.host, d.port, d.max_batch_size, d.max_wait_ms, d.max_queue_images) == (
        "127.0.0.1", 8000, None, None, 256,  # None: measured and chosen; by device (engine)
    )  # fmt: skip
    assert d.engine_lanes is None  # one per usable core on a CPU, one on a GPU
    assert (d.exact_decode, d.decode, d.http, d.workers) == (False, "auto", "httptools", 1)
    assert (d.request_timeout_s, d.max_images_per_request, d.max_body_bytes) == (30, 64, 32 << 20)
    assert (d.max_image_pixels, d.preprocess_threads, d.providers) == (40_000_000, None, "auto")
    assert (d.api_key, d.log_level, d.drain_timeout_s) == (None, "info", 30)
    assert d.bundle.parts[-2:] == ("models", "demo")


@pytest.mark.parametrize(
    ("cores", "setting", "threads"),
    [(2, None, 4), (16, None, 16), (16, 3, 3)],
    ids=["a small machine: four", "a core each", "as set"],
)
def test_the_decode_threads_follow_the_usable_cores_unless_set(
    monkeypatch: pytest.MonkeyPatch, cores: int, setting: int | None, threads: int
) -> None:
    """A lane per core needs decodes at that rate (engine_process.decode_threads: why)."""
    monkeypatch.setattr(engine_process, "usable_cores", lambda: cores)
    assert decode_threads(Settings.model_construct(preprocess_threads=setting)) == threads


def test_the_fronts_share_the_body_budget_and_the_one_engine_decodes(tiny_bundle: Path) -> None:
    limit = 8 << 30
    one = memory_budgets(Settings(bundle=tiny_bundle), limit)
    each_of_two = memory_budgets(Settings(bundle=tiny_bundle, workers=2), limit)
    assert one == (2 << 30, 1 << 30) and each_of_two == (2 << 30, 512 << 20)
