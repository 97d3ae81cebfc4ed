"""The web demo end to end: `fgaseg demo` serving on a free loopback port, driven in headless Chromium (the
system's `chromium` and `chromedriver`, nothing downloaded), and concurrent API requests on loopback.

The screenshot is written to `$FGASEG_TEST_ARTEFACTS/demo.png` (default: the test's temporary folder).
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fgaseg_hf.demo.segmenter import DEMO_MODEL_CHOICE, DemoSegmenter

pytest.importorskip("gradio", reason="the [demo] extra (Gradio) is not installed: pip install -e '.[demo]'")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "synthetic_scene.png"
LABELS = "sky, water, grass, sand, road, building, tree"
CHROMIUM = os.environ.get("FGASEG_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("FGASEG_CHROMEDRIVER", "/usr/bin/chromedriver")
CONCURRENT_REQUESTS = 6
CONCURRENT_SECONDS = 300  # generous: a shared 2-core CI machine; the point is that it finishes, bounded


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`fgaseg demo` in its own process with the shipped model, on 127.0.0.1 only; stopped after the module."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("demo-server") / "server.log"
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "fgaseg_hf.cli", "demo", "--port", str(port), "--queue-size", "8"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 300
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"fgaseg demo exited with {process.returncode}: {log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"fgaseg demo did not answer within 300 s: {log_path.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url, log_path
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)
    assert "Traceback" not in log_path.read_text(), log_path.read_text()[-3000:]
    assert process.returncode == 0  # SIGTERM closes it like Ctrl+C


@pytest.fixture(scope="module")
def expected():
    """What the app's functions give for the example in this process: what the browser must show."""
    segmenter = DemoSegmenter()
    yield segmenter.segment(str(EXAMPLE), LABELS, DEMO_MODEL_CHOICE, None)
    segmenter.close()


@pytest.fixture(scope="module")
def browser():
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(path)]
    if missing:
        pytest.skip(f"headless Chromium is not installed ({', '.join(missing)} absent; "
                    "Debian: apt-get install -y chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver",
                                    reason="selenium is not installed: pip install -e '.[test]'")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="fgaseg-chromium-")
    # A closed network: no sync, updates or background requests, which would only fail.
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,1160"):
        options.add_argument(argument)
    # The driver's path is given, so Selenium Manager never looks for (or downloads) one.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()
    import shutil

    shutil.rmtree(profile, ignore_errors=True)


def _wait(driver, condition, seconds=180, message=""):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.25).until(lambda d: condition(d) or None, message)


def _interior_pixel(label_map: np.ndarray, class_id: int) -> tuple[int, int]:
    """(x, y) of a pixel of `class_id` whose 9 x 9 neighbourhood is all that class (robust to rounding)."""
    same = label_map == class_id
    height, width = same.shape
    for y in range(4, height - 4):
        for x in range(4, width - 4):
            if same[y - 4 : y + 5, x - 4 : x + 5].all():
                return x, y
    raise AssertionError(f"class {class_id} has no interior pixel")


def test_upload_type_segment_in_headless_chromium(server, browser, expected, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    url, _ = server
    browser.get(url)
    upload = _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#input-image input[type=file]"))[0]
    upload.send_keys(str(EXAMPLE))
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#input-image img"), message="the upload shows")
    box = browser.find_element(By.CSS_SELECTOR, "#labels textarea")
    box.clear()
    box.send_keys(LABELS)
    browser.find_element(By.CSS_SELECTOR, "#segment-button").click()

    names = [entry["name"] for entry in expected.legend]
    legend = _wait(browser, lambda d: [e.text.strip() for e in d.find_elements(By.CSS_SELECTOR,
                                                                            "#annotated .legend-item")],
                   message="the hover view's legend")
    assert legend == names  # the classes present, largest first
    overlay = _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#overlay img"))[0]
    with urllib.request.urlopen(overlay.get_attribute("src"), timeout=30) as response:
        shown = Image.open(io.BytesIO(response.read())).convert("RGB")
    assert np.array_equal(np.asarray(shown), np.asarray(expected.overlay))  # the overlay with its legend drawn in

    # Gradio's table draws its rows as a virtual list of grid cells.
    cells = _wait(browser, lambda d: d.execute_script(
        "return [...document.querySelectorAll('#classes [role=gridcell][data-row]')]"
        ".map(c => [Number(c.dataset.row), Number(c.dataset.col), c.textContent.trim()])"))
    rows = [[""] * 3 for _ in range(1 + max(row for row, _, _ in cells))]
    for row, column, text in cells:
        rows[row][column] = text
    assert [row[:1] for row in rows] == [[name] for name in names]
    assert [[float(v) for v in row[1:3]] for row in rows] == [row[1:] for row in expected.table()]

    link = _wait(browser, lambda d: [a for a in d.find_elements(By.CSS_SELECTOR, "#label-png a")
                                     if a.get_attribute("href")], message="the label PNG link")[0]
    with urllib.request.urlopen(link.get_attribute("href"), timeout=30) as response:
        label_png = np.asarray(Image.open(io.BytesIO(response.read())))
    assert np.array_equal(label_png, expected.label_map)

    # Hovering a region of the annotated view names its class.
    base = browser.find_element(By.CSS_SELECTOR, "#annotated img.base-image")
    _wait(browser, lambda d: d.execute_script(
        "return [...document.querySelectorAll('#annotated img.mask')].every(i => i.complete && i.naturalWidth)"))
    for entry in expected.legend[:3]:
        x, y = _interior_pixel(expected.label_map, entry["id"])
        geometry = browser.execute_script(
            "const r = arguments[0].getBoundingClientRect();"
            "return [r.width, r.height, arguments[0].naturalWidth, arguments[0].naturalHeight];", base)
        width, height, natural_w, natural_h = geometry
        scale = min(width / natural_w, height / natural_h)
        dx = (width - natural_w * scale) / 2 + (x + 0.5) * scale - width / 2
        dy = (height - natural_h * scale) / 2 + (y + 0.5) * scale - height / 2
        ActionChains(browser).move_to_element_with_offset(base, int(round(dx)), int(round(dy))).perform()
        tip = _wait(browser, lambda d: d.find_elements(By.ID, "fgaseg-hover-label"), 30)[0]
        _wait(browser, lambda d: tip.is_displayed() and tip.text == entry["name"], 30,
              f"hovering {entry['name']} at {(x, y)} names it (shown: {tip.text!r})")

    artefacts = Path(os.environ.get("FGASEG_TEST_ARTEFACTS", tmp_path))
    artefacts.mkdir(parents=True, exist_ok=True)
    ActionChains(browser).move_to_element(base).perform()
    browser.execute_script("window.scrollTo(0, 0)")
    assert browser.save_screenshot(str(artefacts / "demo.png"))
    assert Image.open(artefacts / "demo.png").size[0] >= 1200

    # Everything the page loaded came from this server: it works on a machine without internet.
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(r.startswith((url, "data:", "blob:")) for r in resources), resources


def test_bad_input_is_a_message_in_the_page(server, browser):
    from selenium.webdriver.common.by import By

    url, _ = server
    browser.get(url)
    box = _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#labels textarea"))[0]
    button = browser.find_element(By.CSS_SELECTOR, "#segment-button")
    button.click()  # no image yet
    _wait(browser, lambda d: "no image: upload a photo" in d.find_element(By.TAG_NAME, "body").text, 60,
          "the missing image is reported")
    browser.find_element(By.CSS_SELECTOR, "#input-image input[type=file]").send_keys(str(EXAMPLE))
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#input-image img"))
    box.clear()
    box.send_keys("sky, tree, sky")
    button.click()
    _wait(browser, lambda d: "duplicate class names: ['sky']" in d.find_element(By.TAG_NAME, "body").text, 60,
          "duplicate labels are reported")
    assert "Traceback" not in browser.page_source


def test_concurrent_requests_on_loopback_all_answer_in_bounded_time(server, expected):
    """N users at once: the queue makes them wait their turn; every one gets the same, right answer."""
    from gradio_client import Client, handle_file

    url, _ = server
    answers, errors = [None] * CONCURRENT_REQUESTS, []

    def one(index):
        try:
            client = Client(url, verbose=False)
            answers[index] = client.predict(handle_file(str(EXAMPLE)), LABELS, DEMO_MODEL_CHOICE, True,
                                            api_name="/segment")
        except Exception as error:  # noqa: BLE001 - collected and reported below
            errors.append(repr(error))

    started = time.monotonic()
    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(CONCURRENT_REQUESTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(1.0, CONCURRENT_SECONDS - (time.monotonic() - started)))
    elapsed = time.monotonic() - started
    assert not any(thread.is_alive() for thread in threads), f"requests still running after {elapsed:.0f} s"
    assert not errors, errors
    assert elapsed < CONCURRENT_SECONDS
    for answer in answers:
        _, table, label_png, _, summary = answer
        assert table["data"] == expected.table()
        assert np.array_equal(np.asarray(Image.open(label_png)), expected.label_map)
        assert summary.startswith(f"{len(expected.legend)} of 7 classes present")
