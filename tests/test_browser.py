"""The API's pages in a real browser: Debian's Chromium, headless, driven by Selenium, with every host but loopback
unresolvable (a machine without internet)."""

from __future__ import annotations

import os
import re
import shutil
import wave
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest
from redis import Redis
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from shared import fleet
from tests.conftest import JFK, Spawned, StartWorker, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
OFFLINE = "MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"


def chromium(*flags: str) -> webdriver.Chrome:
    """Headless Chromium, offline but for loopback, with these flags besides."""
    if not (CHROMIUM and CHROMEDRIVER):
        missing = "chromium and chromedriver are not installed (.ci/run does: apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        f"--host-resolver-rules={OFFLINE}",
        *flags,
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    driver = chromium()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def live_browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    """A browser whose microphone plays the JFK clip between silences (1 s before, 3 s after), looped."""
    from faster_whisper import decode_audio

    rate = 16000
    speech = (np.clip(decode_audio(str(JFK), sampling_rate=rate), -1, 1) * 32767).astype("<i2").tobytes()
    wav = tmp_path_factory.mktemp("microphone") / "jfk.wav"
    with wave.open(str(wav), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(rate * 2) + speech + bytes(3 * rate * 2))
    driver = chromium(
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
    )
    yield driver
    driver.quit()


@pytest.fixture
def live_worker(start_worker: StartWorker, redis: Redis) -> Spawned:
    """A live worker (tiny.en), once it has announced itself (as tests/live/conftest.py's fixture starts one)."""
    worker = start_worker("tiny.en", burst=False, role="live")
    wait_for(lambda: any(w.live_slots for w in fleet.live_workers(redis)) or worker.poll() is not None, 120)
    assert worker.poll() is None, worker.log.text[-3000:]
    return worker


def test_docs_render_their_operations_without_internet(api: httpx.Client, browser: webdriver.Chrome) -> None:
    browser.get(f"{api.base_url}/docs")
    operations = WebDriverWait(browser, 60).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"))
    assert "/v1/tasks" in {element.text.replace("\u200b", "") for element in operations}

    browser.get(f"{api.base_url}/redoc")
    WebDriverWait(browser, 60).until(lambda b: "/v1/tasks" in b.find_element(By.TAG_NAME, "body").text)


@pytest.mark.slow
def test_the_page_transcribes_an_upload_and_lists_it(
    api: httpx.Client, browser: webdriver.Chrome, served: Callable[[str], None], start_worker: StartWorker
) -> None:
    served("tiny.en")
    browser.get(f"{api.base_url}/")
    browser.find_element(By.ID, "file").send_keys(str(JFK))
    browser.find_element(By.CSS_SELECTOR, "#submit button[type=submit]").click()
    WebDriverWait(browser, 60).until(lambda b: ": queued" in b.find_element(By.ID, "status").text)
    worker = start_worker()
    WebDriverWait(browser, 180).until(lambda b: ": completed" in b.find_element(By.ID, "status").text)
    transcript = browser.find_element(By.ID, "transcript").text
    assert "ask not what your country can do for you" in transcript
    assert browser.find_element(By.ID, "downloads").is_displayed()
    rows = WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#tasks tr"))
    assert "completed" in rows[0].text
    assert worker.wait(timeout=120) == 0


FINALS = "return Array.from(document.querySelectorAll('#live-text .final'), (line) => line.textContent).join(' ')"


@pytest.mark.slow
def test_the_live_tab_transcribes_the_microphone(
    api_factory: Callable[..., httpx.Client], live_browser: webdriver.Chrome, live_worker: Spawned
) -> None:
    api = api_factory(live_model="tiny.en")
    live_browser.get(f"{api.base_url}/ui/")
    assert not live_browser.find_element(By.ID, "live-start").is_displayed()
    live_browser.find_element(By.ID, "tab-live").click()
    assert not live_browser.find_element(By.ID, "submit").is_displayed()
    assert live_browser.find_element(By.ID, "tab-live").get_attribute("aria-selected") == "true"
    assert live_browser.find_element(By.ID, "live-text").get_attribute("aria-live") == "polite"
    live_browser.find_element(By.ID, "live-start").click()
    try:
        WebDriverWait(live_browser, 90).until(
            lambda b: re.search(r"ask not|country", b.execute_script(FINALS), re.IGNORECASE)
        )
    except TimeoutException:
        status = live_browser.find_element(By.ID, "live-status").text
        shown = live_browser.find_element(By.ID, "live-text").text
        pytest.fail(f"no final text with the words; status {status!r}, text {shown!r}\n{live_worker.log.text[-3000:]}")
    assert live_browser.find_element(By.ID, "live-start").get_attribute("disabled")
    live_browser.find_element(By.ID, "live-stop").click()
    WebDriverWait(live_browser, 30).until(lambda b: b.find_element(By.ID, "live-start").is_enabled())
    assert live_browser.find_element(By.ID, "live-status").text == "Stopped."
    assert not live_browser.find_element(By.ID, "live-stop").is_enabled()
