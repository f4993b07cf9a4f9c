"""The web app in a real headless browser (Debian's chromium through Selenium): open the page, upload
the demo clip, ask the demo question, see the answer and the thumbnails. The screenshot it takes is
docs/app.png (``UPDATE_SCREENSHOT=1`` writes it there; otherwise it goes to the test's temp folder).

CI installs chromium (``.ci/run``); there a missing browser fails the test, elsewhere it is skipped."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("gradio")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "app.png"


def _browser_or_skip():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if missing:
        why = f"needs {', '.join(missing)} (apt-get install chromium chromium-driver; pip install selenium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser test: {why}")
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1060"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def test_upload_ask_and_see_answer_and_thumbnails(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from llava_next_video_hf.app import launch, make_backend
    from llava_next_video_hf.testing import tasks

    driver = _browser_or_skip()
    clip = tmp_path / "demo-clip.mp4"
    question, expected = tasks.make_demo_clip(clip)
    demo = launch(make_backend(), port=None, block=False)
    try:
        driver.get(demo.local_url)
        wait = WebDriverWait(driver, 120)
        upload = wait.until(
            ec.presence_of_element_located((By.CSS_SELECTOR, "#video-upload input[type=file]"))
        )
        upload.send_keys(str(clip))
        wait.until(ec.text_to_be_present_in_element((By.ID, "video-upload"), clip.stem))  # uploaded
        box = driver.find_element(By.CSS_SELECTOR, "#question textarea")
        box.send_keys(question)
        driver.find_element(By.ID, "ask").click()

        def answered(d):  # the chat shows the question, then the answer (the question lacks the word)
            text = d.find_element(By.ID, "chat").text
            return question in text and expected in text.split(question, 1)[1].lower()

        wait.until(answered)
        thumbs = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#thumbnails img") or None)
        assert len(thumbs) == 8  # the checkpoint's 8 frames
        captions = driver.find_element(By.ID, "thumbnails").text
        assert "#0" in captions and "0.000 s" in captions
        assert "128 video tokens" in driver.find_element(By.ID, "budget").text
        assert "answer 1:" in driver.find_element(By.ID, "timing").text
        box.send_keys("Which direction does the object move?")  # a second question: the video is cached
        driver.find_element(By.ID, "ask").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "timing"), "answer 2:"))
        assert "not decoded or encoded again" in driver.find_element(By.ID, "timing").text
        loaded = driver.execute_script(
            "return [...document.querySelectorAll('#thumbnails img')].map(i => i.complete && i.naturalWidth > 0)"
        )
        assert loaded == [True] * 8  # every thumbnail shows its picture
        shot = tmp_path / "app.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("UPDATE_SCREENSHOT") == "1":
            shutil.copyfile(shot, DOCS_SCREENSHOT)
    finally:
        driver.quit()
        demo.close()
