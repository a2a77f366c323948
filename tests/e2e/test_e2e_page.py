"""The page at / in a real headless Chromium (Debian's chromium + chromium-driver, driven by
selenium) against a real `vit-serve` with the demo model and an API key: the page asks for the
key, a drawn star is picked, and the page shows the service's answer and the heat-map over it.

PAGE_SCREENSHOT=docs/page.png also saves the screenshot there (the README's picture).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live import Server
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as shown
from selenium.webdriver.support.wait import WebDriverWait

from vit_core.bundle import load_bundle

DEMO = Path(__file__).resolve().parents[2] / "models" / "demo"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.skipif(
        not (DEMO / "model.json").is_file(), reason="models/demo/model.json does not exist yet"
    ),
    pytest.mark.skipif(
        not (CHROMIUM and DRIVER),
        reason="chromium and chromedriver are not installed (make test installs them: "
        "apt-get install chromium chromium-driver)",
    ),
]

KEY = "page-k3y"
SEED = 20_251_130  # not a training seed: the star is new to the model
SIZE = 384  # larger than the model's 224: the heat-map is drawn over the picture as uploaded
WINDOW = (1000, 820)  # the whole answer fits: the README shows this screenshot


@pytest.fixture
def browser() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console errors, CSP too
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(DRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_names_a_drawn_star_and_shows_where_it_looked(
    serve: Callable[..., Server], browser: Any, tmp_path: Path
) -> None:
    from model_export.demo.shapes import draw_shape

    server = serve(bundle=DEMO, api_key=KEY, max_batch_size=2)
    star, _ = draw_shape("star", SIZE, SEED)
    picture = tmp_path / "star.png"
    star.save(picture)
    wait = WebDriverWait(browser, 60)

    browser.get(f"{server.url}/")
    key = wait.until(shown.visibility_of_element_located((By.ID, "key")))  # /model said 401
    key.send_keys(KEY)
    browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
    version = load_bundle(DEMO).version  # the bundled model's, whichever retraining it is
    wait.until(shown.text_to_be_present_in_element((By.ID, "model"), f"vit-shapes-demo v{version}"))
    assert browser.execute_script("return sessionStorage.length") == 1
    assert not browser.find_element(By.ID, "key-form").is_displayed()
    assert not browser.find_element(By.ID, "result").is_displayed()  # nothing to show yet

    # What the page must show: the service's own answer for this picture (the demo model's
    # accuracy is tested elsewhere; versions after the first are not sure of every star).
    files = {"file": ("star.png", picture.read_bytes(), "image/png")}
    auth = {"Authorization": f"Bearer {KEY}"}
    answer = httpx.post(f"{server.url}/classify?top_k=5", files=files, headers=auth, timeout=60)
    expected_top5 = answer.json()["results"][0]["predictions"]

    browser.find_element(By.ID, "file").send_keys(str(picture))
    wait.until(lambda d: d.find_element(By.ID, "top-label").text)
    assert browser.find_element(By.ID, "top-label").text == expected_top5[0]["label"]
    bars = browser.find_elements(By.CSS_SELECTOR, "#bars li")
    assert [b.text.split()[0] for b in bars] == [p["label"] for p in expected_top5]
    track = bars[0].find_element(By.CLASS_NAME, "track").size["width"]
    for bar, p in zip(bars, expected_top5, strict=True):  # drawn to the scores
        width = bar.find_element(By.CLASS_NAME, "bar").size["width"]
        assert abs(width - p["score"] * track) <= 2, (p, width, track)
    loaded = "const i = document.getElementById('heatmap'); return i.complete && i.naturalWidth"
    assert wait.until(lambda d: d.execute_script(loaded)) == SIZE  # the PNG from /attention
    caption = browser.find_element(By.ID, "heatmap-caption").text
    assert caption == "attention rollout over the image"
    timings = browser.find_element(By.ID, "timings").text
    assert "ONNX Runtime" in timings and "waiting for a batch" in timings
    expected = "the server responded with a status of 401"  # the first /model, before the key
    log = browser.get_log("browser")
    errors = [e for e in log if e["level"] == "SEVERE" and expected not in e["message"]]
    assert not errors, errors  # no script error, no Content-Security-Policy violation

    shot = tmp_path / "page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if target := os.environ.get("PAGE_SCREENSHOT"):
        shutil.copyfile(shot, target)
