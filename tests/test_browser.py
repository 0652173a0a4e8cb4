"""The API's pages in a real browser: Debian's Chromium, headless, driven by Selenium, with every host but loopback
unresolvable (a machine without internet)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

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
