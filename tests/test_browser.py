"""The API's pages in a real browser: Debian's Chromium, headless, driven by Selenium, with every host but loopback
unresolvable (a machine without internet)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import JFK, StartWorker

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
OFFLINE = "MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
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
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


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
