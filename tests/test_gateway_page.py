"""The try-it page in a real headless Chromium (Debian's chromium + chromium-driver via Selenium).

The release model in models/fashion is served by the local model server, the gateway runs as a
subprocess with an API key, and the browser uploads real test photos of the data set. The page must
show, for each photo, the label and version the JSON API gives for the same file, with its bars.
The screenshot it leaves in docs/images/try-it.png is the one the README shows.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import requests

from gateway.launcher import GatewayProcess
from serving.launcher import ModelServerProcess

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "docs" / "images" / "try-it.png"
KEY = "page-test-key"


def _data_dir() -> Path:
    configured = os.environ.get("FASHION_DATA_DIR")
    candidates = [Path(configured)] if configured else []
    candidates += [
        ROOT.parent / "shared/data/clothing-dataset-small",
        ROOT / "data/clothing-dataset-small",
    ]
    for folder in candidates:
        if (folder / "test").is_dir():
            return folder
    pytest.skip("the clothing data set is not available (FASHION_DATA_DIR)")


def _photos() -> list[Path]:
    test = _data_dir() / "test"
    return [sorted((test / label).glob("*.jpg"))[0] for label in ("shoes", "dress")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from conftest import _require

    _require("chromium", "chromium")
    _require("chromedriver", "chromium-driver")
    logs = tmp_path_factory.mktemp("page")
    with (
        ModelServerProcess(
            ["--model_name=fashion", f"--model_base_path={ROOT / 'models/fashion'}"],
            log_path=logs / "serving.log",
            start_timeout=600,  # TensorFlow and MobileNetV2 warm-up on a loaded 2-core host
        ) as server,
        GatewayProcess(
            {"SERVING_GRPC_ADDRESS": server.grpc_address, "GATEWAY_API_KEY": KEY},
            log_path=logs / "gateway.log",
            timeout=120,
        ) as gateway,
    ):
        yield gateway


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1100,1240",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _api_answer(url: str, photo: Path) -> dict:
    with photo.open("rb") as handle:
        response = requests.post(
            url + "/predict",
            files={"image": (photo.name, handle, "image/jpeg")},
            headers={"X-API-Key": KEY},
            timeout=60,
        )
    assert response.status_code == 200, response.text
    return response.json()


def test_the_page_classifies_real_photos_and_shows_label_bars_and_version(stack, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    photos = _photos()
    expected = {p.name: _api_answer(stack.url, p) for p in photos}

    browser.get(stack.url + "/")  # a browser's Accept header gets the page, not JSON
    assert browser.title == "Fashion classifier · try it"
    key_field = browser.find_element(By.ID, "api-key")
    key_field.send_keys(KEY)
    assert browser.execute_script("return sessionStorage.getItem('fashion-gateway-api-key')") == KEY
    assert browser.execute_script("return window.localStorage.length") == 0
    browser.find_element(By.ID, "picker").send_keys("\n".join(str(p) for p in photos))

    wait = WebDriverWait(browser, 120)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card .bar-row")) >= 2 * 3)
    wait.until(
        lambda d: all(
            s.get_attribute("textContent") in ("done", "abstained")
            for s in d.find_elements(By.CSS_SELECTOR, ".card .state")
        )
    )
    cards = browser.find_elements(By.CSS_SELECTOR, "#results .card")
    assert len(cards) == 2
    for card in cards:
        name = card.find_element(By.CSS_SELECTOR, ".name").get_attribute("textContent")
        answer = expected[name]
        prediction = answer["prediction"]
        label = card.find_element(By.CSS_SELECTOR, ".verdict .label").get_attribute("textContent")
        assert label == prediction["label"]
        meta = card.find_element(By.CSS_SELECTOR, ".meta")
        assert meta.get_attribute("data-version") == str(answer["model"]["version"])
        assert meta.get_attribute("textContent").startswith(
            f"version {answer['model']['version']} · "
        )
        rows = card.find_elements(By.CSS_SELECTOR, ".bar-row")
        assert [
            r.find_element(By.CSS_SELECTOR, ".bar-label").get_attribute("textContent") for r in rows
        ] == [t["label"] for t in prediction["top_k"]]
        first = rows[0].find_element(By.CSS_SELECTOR, ".bar-value").get_attribute("textContent")
        assert first == f"{prediction['confidence'] * 100:.1f}%" or first == "100%"
        flags = card.find_elements(By.CSS_SELECTOR, ".flag")
        assert len(flags) == (1 if "abstain" in prediction else 0)
    assert {p.name for p in photos} == set(expected)
    announced = browser.find_element(By.ID, "announce")
    wait.until(lambda d: announced.get_attribute("textContent").endswith("."))
    assert "Model version" in announced.get_attribute("textContent")
    version = next(iter(expected.values()))["model"]["version"]
    model = browser.find_element(By.ID, "model")
    wait.until(lambda d: f"version {version}" in model.get_attribute("textContent"))
    assert "10 classes: dress, hat," in model.get_attribute("textContent")

    # keyboard: Tab from the key field reaches the class count and then the photo picker
    key_field.click()
    from selenium.webdriver.common.keys import Keys

    key_field.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.get_attribute("id") == "top-k"
    browser.switch_to.active_element.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.get_attribute("id") == "picker"

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    browser.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
    wait.until(expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, ".card img")))
    assert browser.save_screenshot(str(SCREENSHOT))


def test_an_error_shows_its_code_and_message(stack, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(stack.url + "/ui")
    browser.execute_script("sessionStorage.clear()")
    browser.get(stack.url + "/ui")
    assert browser.find_element(By.ID, "api-key").get_attribute("value") == ""
    notes = tmp_path / "notes.jpg"
    notes.write_text("this is not a photo\n" * 10)
    browser.find_element(By.ID, "picker").send_keys(str(notes))
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".card.failed .error-code"))
    code = browser.find_element(By.CSS_SELECTOR, ".card.failed .error-code").get_attribute(
        "textContent"
    )
    assert code == "unauthorized"  # no key in this tab any more: the gateway's own error
    browser.find_element(By.ID, "api-key").send_keys(KEY)
    browser.find_element(By.ID, "picker").send_keys(str(notes))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card.failed")) == 2)
    newest = browser.find_elements(By.CSS_SELECTOR, ".card.failed")[0]
    assert (
        newest.find_element(By.CSS_SELECTOR, ".error-code").get_attribute("textContent")
        == "not_an_image"
    )
    assert newest.find_element(By.CSS_SELECTOR, ".state").get_attribute("textContent") == "error"
