"""The web chat in a real browser: Debian's headless Chromium, driven by selenium through chromedriver, loads the page
from a live chat_web.py server on 127.0.0.1 with a tiny model, sends a message, and sees the streamed reply.
.ci/run installs chromium and chromium-driver where they are missing; the test skips only where they can't be."""
import shutil
import socket
import subprocess
import sys
import time

import httpx
import pytest

from helpers import REPO

CHROMIUM, DRIVER = shutil.which('chromium') or shutil.which('chromium-browser'), shutil.which('chromedriver')


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def talker(workdir, chat_data):
    """A tiny model trained long enough on data/chat to answer a greeting with words, not an end of turn."""
    from helpers import train
    out = workdir / 'out-chat-browser'
    train(workdir, out, '--block_size=32', '--max_iters=150', '--eval_interval=150', '--learning_rate=1e-2',
          '--warmup_iters=0', dataset='chat')
    return out


@pytest.fixture
def server(talker, tmp_path):
    """chat_web.py serving the tiny chat model on a free port of 127.0.0.1, until the test ends."""
    port = free_port()
    log = open(tmp_path / 'server.log', 'w')
    proc = subprocess.Popen([sys.executable, str(REPO / 'chat_web.py'), f'--out_dir={talker}', f'--port={port}',
                             '--device=cpu', '--max_new_tokens=16'], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    url = f'http://127.0.0.1:{port}'
    for _ in range(300):
        try:
            if httpx.get(f'{url}/health', timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
        assert proc.poll() is None, (tmp_path / 'server.log').read_text()
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM and DRIVER):
        pytest.skip("no chromium/chromedriver here: apt-get install -y chromium chromium-driver (as root; .ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # the system's browser and driver: selenium downloads nothing
    for flag in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update', '--disable-sync',
                 '--window-size=1000,700', f'--user-data-dir={tmp_path / "profile"}'):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def test_the_page_streams_a_reply_in_a_real_browser(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
    wait = WebDriverWait(browser, 30)
    browser.get(server)
    wait.until(lambda d: 'parameters' in d.find_element(By.ID, 'model').text)  # /health answered
    assert '→' in browser.find_element(By.ID, 'arrow').text and 'gpt' in browser.find_element(By.ID, 'model').text
    temperature = browser.find_element(By.ID, 'temperature')
    temperature.clear()
    temperature.send_keys('0')  # greedy: the reply this model gives, every time
    box = browser.find_element(By.ID, 'input')
    box.send_keys('hello there')
    box.send_keys(Keys.ENTER)
    wait.until(lambda d: d.find_element(By.ID, 'status').text == '' and d.find_elements(By.CSS_SELECTOR, '#log .msg.assistant'))
    users = [e.text for e in browser.find_elements(By.CSS_SELECTOR, '#log .msg.user')]
    replies = [e.text for e in browser.find_elements(By.CSS_SELECTOR, '#log .msg.assistant')]
    assert users == ['hello there'] and len(replies) == 1 and replies[0].strip()  # the reply arrived, in its place
    assert box.get_attribute('value') == ''  # and the input cleared
    assert not browser.find_elements(By.CSS_SELECTOR, '.error')
    shot = tmp_path / 'chat_web.png'
    browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and shot.stat().st_size > 5000
