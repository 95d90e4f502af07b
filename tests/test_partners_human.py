"""The human partners for real: a person typing in a pseudo-terminal (pexpect), HTTP requests to the
web partner's server, and a headless Chromium filling its page. Each checks that only the valid
answer reaches the caller and the feedback store."""
from __future__ import annotations

import io
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pexpect
import pytest
import torch
from rich.console import Console

from cogen.collab.partner import SimulatedPartner
from cogen.collab.recorded import RecordedPartner
from cogen.collab.store import FeedbackStore
from cogen.collab.web import WebPartner

SCRIPT = """
import sys
import torch
from cogen.collab.recorded import RecordedPartner
from cogen.collab.store import FeedbackStore
from cogen.collab.terminal import TerminalPartner
from cogen.config import CogenError

tmp, questions = sys.argv[1], int(sys.argv[2])
partner = RecordedPartner(TerminalPartner(dirpath=tmp + "/shown"), FeedbackStore(tmp + "/feedback.sqlite"), tmp + "/feedback")
try:
    for _ in range(questions):
        print("GOT", partner.rate(torch.rand(3, 1, 8, 8)).tolist(), flush=True)
except CogenError as e:
    print("STOPPED:", e, flush=True)
    sys.exit(3)
"""


def spawn_terminal(tmp_path: Path, questions: int) -> pexpect.spawn:
    script = tmp_path / "ask.py"
    script.write_text(SCRIPT)
    return pexpect.spawn(sys.executable, [str(script), str(tmp_path), str(questions)], encoding="utf-8",
                         timeout=120, dimensions=(24, 200), env={**os.environ, "TERM": "xterm-256color"})


def stored(tmp_path: Path) -> list:
    store = FeedbackStore(tmp_path / "feedback.sqlite")
    try:
        return store.records()
    finally:
        store.close()


@pytest.mark.timeout(180)
def test_terminal_asks_again_until_the_answer_is_valid_and_stores_only_that(tmp_path):
    child = spawn_terminal(tmp_path, 1)
    child.expect("3 images, numbered left to right, top to bottom: (\\S+\\.png)")
    assert Path(child.match.group(1)).is_file()
    child.expect("Rate the 3 items")
    child.sendline("5 7x 4")
    child.expect("'7x' is not a rating: type whole numbers from 1 to 5")
    child.expect("Rate the 3 items")
    child.sendline("5 3")
    child.expect("2 ratings for 3 items: give one per item")
    child.sendline("5 3 4")
    child.expect(r"GOT \[5, 3, 4\]")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    (record,) = stored(tmp_path)
    assert (record.question, record.partner_kind, record.partner_id) == ("rate", "terminal", "human")
    assert torch.equal(record.answer, torch.tensor([5, 3, 4])) and record.answer.dtype == torch.int64


@pytest.mark.timeout(180)
def test_terminal_ctrl_c_stops_cleanly_with_the_answers_given_saved(tmp_path):
    child = spawn_terminal(tmp_path, 2)
    child.expect("Rate the 3 items")
    child.sendline("1 2 3")
    child.expect(r"GOT \[1, 2, 3\]")
    child.expect("Rate the 3 items")
    child.sendintr()
    child.expect("saved in the run's feedback store .*resume=auto")
    child.expect("STOPPED:")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 3
    (record,) = stored(tmp_path)
    assert torch.equal(record.answer, torch.tensor([1, 2, 3]))


class Call(threading.Thread):
    """A partner question asked in the background, as a training thread would."""

    def __init__(self, fn, *args):
        super().__init__(daemon=True)
        self.fn, self.args, self.result, self.error = fn, args, None, None
        self.start()

    def run(self):
        try:
            self.result = self.fn(*self.args)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            self.error = e

    def value(self):
        self.join(30)
        assert not self.is_alive() and self.error is None, self.error
        return self.result


def http(partner: WebPartner, path: str, body=None, token: str | None = "header") -> tuple[int, str]:
    """(status, body) of a real request; token: 'header', 'query', None or a wrong one."""
    url = f"http://127.0.0.1:{partner.port}{path}"
    headers = {"Content-Type": "application/json"}
    if token == "header":
        headers["X-Cogen-Token"] = partner.token
    elif token == "query":
        url += f"?token={partner.token}"
    elif token is not None:
        url += f"?token={token}"
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method="GET" if data is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def pending(partner: WebPartner) -> str:
    """The pending question's id, once the partner has published it."""
    for _ in range(200):
        question = json.loads(http(partner, "/question")[1])
        if question["id"]:
            return question["id"]
        time.sleep(0.05)
    raise AssertionError("no question was published")


def web_partner(**kwargs) -> WebPartner:
    return WebPartner(console=Console(file=io.StringIO()), **kwargs)


@pytest.mark.timeout(120)
def test_web_checks_the_token_and_every_field_and_stores_the_valid_answer(tmp_path):
    partner = web_partner(timeout=None)
    recorded = RecordedPartner(partner, FeedbackStore(tmp_path / "feedback.sqlite"), tmp_path / "feedback")
    try:
        assert partner.url.startswith(f"http://127.0.0.1:{partner.port}/?token=")
        call = Call(recorded.rate, torch.rand(3, 1, 8, 8))
        qid = pending(partner)
        for token in (None, "wrong"):
            assert http(partner, "/", token=token)[0] == 403
        status, body = http(partner, "/answer", {"id": qid, "ratings": [5, 3, 4]}, token=None)
        assert status == 403 and "token" in json.loads(body)["error"]
        status, page = http(partner, "/", token="query")
        assert status == 200 and 'name="rating-2"' in page and page.count("data:image/png;base64,") == 3

        def answer(body, token="header"):
            status, text = http(partner, "/answer", body, token=token)
            return status, json.loads(text).get("error")

        assert answer({"id": qid, "ratings": [5, 3]}) == (400, "2 ratings for 3 items: give one per item, e.g. [5, 3, 4]")
        assert answer({"id": qid, "ratings": [5, 9, 3]}) == (400, "item 2: 9 is not a rating: type whole numbers from 1 to 5")
        assert answer({"id": qid, "ratings": [5, "x", 3]})[1].startswith("item 2: 'x' is not a rating")
        assert answer({"id": qid, "ratings": [5, 2.5, 3]})[1].startswith("item 2: 2.5 is not a rating")
        assert answer({"id": qid, "ratings": [5, None, 3]})[1].startswith("item 2: nothing is not a rating")
        assert answer({"id": qid, "ratings": "5 3 4"}) == (400, "'ratings' must be a list")
        assert answer(b"not json") == (400, "the body must be a JSON object")
        assert answer({"ratings": [5, 3, 4]})[0] == 400
        assert answer({"id": "stale", "ratings": [5, 3, 4]})[0] == 409
        assert call.is_alive() and stored(tmp_path) == []

        assert answer({"id": qid, "ratings": [5, 3, 4]}, token="query") == (200, None)
        assert torch.equal(call.value(), torch.tensor([5, 3, 4]))
        assert answer({"id": qid, "ratings": [5, 3, 4]})[0] == 409   # answered: no longer pending
        (record,) = stored(tmp_path)
        assert (record.question, record.partner_kind, record.partner_id) == ("rate", "web", "human")
        assert torch.equal(record.answer, torch.tensor([5, 3, 4]))
    finally:
        partner.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(partner.url, timeout=5)


@pytest.mark.timeout(120)
def test_web_compare_and_classes(tmp_path):
    partner = web_partner(timeout=None)
    try:
        call = Call(partner.compare, ["a", "b"], ["c", "<d>"])
        qid = pending(partner)
        page = http(partner, "/", token="query")[1]
        assert 'id="choice-1-2"' in page and "&lt;d&gt;" in page and "<d>" not in page   # texts are escaped
        assert http(partner, "/answer", {"id": qid, "choices": [2, 3]})[0] == 400
        assert http(partner, "/answer", {"id": qid, "choices": [2, 1]})[0] == 200
        assert torch.equal(call.value(), torch.tensor([1, 0]))
        call = Call(partner.ask_condition, 10, 5)
        qid = pending(partner)
        status, body = http(partner, "/answer", {"id": qid, "classes": [3, 10]})
        assert status == 400 and "10 is not a class" in json.loads(body)["error"]
        assert http(partner, "/answer", {"id": qid, "classes": [3, 7]})[0] == 200
        assert call.value().tolist() == [3, 7, 3, 7, 3]
        call = Call(partner.edit, ["a b c d", "e f g h"])   # texts: the person writes the start of each
        qid = pending(partner)
        page = http(partner, "/", token="query")[1]
        assert 'id="draft-1"' in page and "e f g h" in page
        status, body = http(partner, "/answer", {"id": qid, "drafts": ["a b"]})
        assert status == 400 and json.loads(body)["error"].startswith("1 drafts for 2 items")
        assert http(partner, "/answer", {"id": qid, "drafts": ["a b", 3]})[0] == 400
        assert http(partner, "/answer", {"id": qid, "drafts": [" a  b ", ""]})[0] == 200
        assert call.value() == ["a b", ""]
    finally:
        partner.close()


@pytest.mark.timeout(120)
def test_terminal_takes_one_draft_per_text(tmp_path):
    script = tmp_path / "draft.py"
    script.write_text("from cogen.collab.terminal import TerminalPartner\n"
                      "print('GOT', TerminalPartner().edit(['a b c d', 'e f g h']), flush=True)\n")
    child = pexpect.spawn(sys.executable, [str(script)], encoding="utf-8", timeout=60, dimensions=(24, 200))
    child.expect("2. e f g h")
    child.expect("Write the start of each of the 2 texts")
    child.sendline("a b")
    child.expect("1 drafts for 2 items: give one per item")
    child.sendline("a b |  ")
    child.expect(r"GOT \['a b', ''\]")
    child.expect(pexpect.EOF)


@pytest.mark.timeout(120)
def test_web_timeout_falls_back_to_the_simulated_partner_and_says_so(tmp_path):
    partner = web_partner(timeout=0.3, fallback="simulated", fallback_partner={"seed": 3})
    recorded = RecordedPartner(partner, FeedbackStore(tmp_path / "feedback.sqlite"), tmp_path / "feedback")
    try:
        labels = recorded.ask_condition(10, 6)
        assert torch.equal(labels, SimulatedPartner(seed=3).ask_condition(10, 6))
        assert json.loads(http(partner, "/question")[1])["id"] is None   # withdrawn
        (record,) = stored(tmp_path)
        assert "simulated(seed=3" in record.partner_id and torch.equal(record.answer, labels)
    finally:
        partner.close()


@pytest.mark.timeout(120)
def test_web_pause_keeps_waiting_and_logs_it(caplog):
    partner = web_partner(timeout=0.2, fallback="pause")
    try:
        call = Call(partner.rate, ["a"])
        qid = pending(partner)
        for _ in range(100):
            if "still waiting" in caplog.text:
                break
            time.sleep(0.05)
        assert "no answer to the rate question after" in caplog.text and call.is_alive()
        assert http(partner, "/answer", {"id": qid, "ratings": [2]})[0] == 200
        assert call.value().tolist() == [2]
    finally:
        partner.close()


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(),
                    reason="needs Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver")
def test_a_browser_fills_the_page_and_the_ratings_reach_the_store(tmp_path, monkeypatch):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    monkeypatch.setenv("SE_OFFLINE", "true")   # Selenium Manager must not try to download anything
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    partner = web_partner(timeout=None)
    recorded = RecordedPartner(partner, FeedbackStore(tmp_path / "feedback.sqlite"), tmp_path / "feedback")
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        call = Call(recorded.rate, torch.rand(3, 1, 8, 8))
        pending(partner)
        driver.get(partner.url)
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: d.find_elements(By.NAME, "rating-2"))
        assert driver.execute_script("return [...document.images].filter(i => i.naturalWidth > 0).length") == 3
        for i, rating in enumerate(["4", "9", "5"]):
            driver.find_element(By.NAME, f"rating-{i}").send_keys(rating)
        driver.find_element(By.ID, "submit").click()
        wait.until(lambda d: "9 is not a rating" in d.find_element(By.ID, "error").text)
        assert call.is_alive()
        driver.find_element(By.NAME, "rating-1").clear()
        driver.find_element(By.NAME, "rating-1").send_keys("2")
        driver.find_element(By.ID, "submit").click()
        wait.until(lambda d: "Thanks" in d.find_element(By.ID, "status").text)
        assert torch.equal(call.value(), torch.tensor([4, 2, 5]))
        (record,) = stored(tmp_path)
        assert torch.equal(record.answer, torch.tensor([4, 2, 5])) and record.partner_kind == "web"
    finally:
        driver.quit()
        partner.close()
