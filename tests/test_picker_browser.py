"""The module picker in a real browser: headless Chromium (the system's `chromium` package) driven by Playwright.

Skipped, with how to install them, when Chromium or Playwright is missing; `make test` installs both.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import threading
import time
import urllib.parse

import pytest

import opendelta.picker as picker
from opendelta import AutoDeltaConfig, AutoDeltaModel
from opendelta.errors import PickerCancelledError, PickerTimeoutError
from opendelta.matching import is_delta_layer
from opendelta.picker import PickerModel, PickerServer
from tiny import build

CHROMIUM = os.environ.get("OPENDELTA_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
HOW_TO_INSTALL = (
    "the picker's browser tests need Chromium and Playwright: `apt-get install chromium` (Debian / "
    "Ubuntu; or set OPENDELTA_CHROMIUM to a Chromium binary) and `pip install -e '.[test]'`; "
    "`make test` installs both"
)

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

_MISSING = sync_playwright is None or not os.path.exists(CHROMIUM)
if _MISSING and os.environ.get("OPENDELTA_REQUIRE_BROWSER"):  # CI: a missing browser is a failure, not a skip
    raise RuntimeError(f"OPENDELTA_REQUIRE_BROWSER is set but Chromium or Playwright is missing: {HOW_TO_INSTALL}")
pytestmark = pytest.mark.skipif(_MISSING, reason=f"Chromium or Playwright missing: {HOW_TO_INSTALL}")


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1000, "height": 760})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, errors


_RUNNING: list[Background] = []


@pytest.fixture(autouse=True)
def _cancel_leftovers():
    """A failed test must not leave a picker blocking the test run: cancel it through its own API."""
    yield
    while _RUNNING:
        run = _RUNNING.pop()
        if run.thread.is_alive() and run.urls:
            parts = urllib.parse.urlsplit(run.urls[0])
            token = urllib.parse.parse_qs(parts.query)["token"][0]
            conn = http.client.HTTPConnection("127.0.0.1", parts.port, timeout=5)
            conn.request(
                "POST", "/api/cancel", body="{}", headers={"X-Picker-Token": token, "Content-Type": "application/json"}
            )
            conn.getresponse().read()
            conn.close()
        run.thread.join(30)


class Background:
    """Runs `fn` in a thread and hands back the page URL the picker announces (through its browser opener)."""

    def __init__(self, monkeypatch, fn):
        _RUNNING.append(self)
        self.urls: list[str] = []
        self.result = self.error = None
        monkeypatch.setattr(picker, "_open_browser", lambda url: self.urls.append(url) or True)
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn):
        try:
            self.result = fn()
        except BaseException as exc:  # handed to the test
            self.error = exc

    def url(self, timeout=60.0) -> str:
        end = time.monotonic() + timeout
        while not self.urls:
            assert time.monotonic() < end and self.thread.is_alive() or self.urls, f"no picker URL ({self.error!r})"
            time.sleep(0.02)
        return self.urls[0]

    def join(self, timeout=30.0):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the picker did not return"
        return self.result


def _settled(page):
    page.wait_for_selector("body[data-ready='1'][data-pending='0']")


def _row(page, path):
    return page.locator(f"li[data-path='{path}'] > .row").first


def _footer(page):
    _settled(page)
    return int(page.locator("#n-modules").inner_text()), int(page.locator("#n-delta").get_attribute("data-value"))


def _no_picker_threads():
    return not [t for t in threading.enumerate() if t.name.startswith("opendelta-picker")]


def test_bert_search_unfold_mouse_and_keyboard_then_submit(page, monkeypatch, tmp_path):
    model = build("bert")
    cfg = AutoDeltaConfig.from_dict({"delta_type": "lora", "lora_r": 4})
    run = Background(
        monkeypatch, lambda: AutoDeltaModel.from_config(cfg, backbone_model=model, interactive_modify=True)
    )
    page.goto(run.url())
    _settled(page)
    assert _footer(page)[0] == 4  # the family defaults (query, value) are preselected
    page.click("#clear")
    assert _footer(page) == (0, 0)
    # a module the delta type cannot modify: not selectable, the reason on hover
    norm = page.locator("li[data-path='bert.embeddings.LayerNorm']")
    assert norm.get_attribute("data-selectable") == "false" and "supports Linear" in norm.get_attribute("title")
    norm.locator(".row").click()  # clicking says why, and selects nothing
    expect(page.locator("#error")).to_contain_text("cannot be modified")
    # search (substring), with the match count; Enter selects the selectable matches
    page.fill("#search", "query")
    expect(page.locator("#matches")).to_have_text("2 modules match (2 selectable)")
    page.press("#search", "Enter")
    assert _footer(page)[0] == 2
    page.press("#search", "Escape")
    # expand a folded group (0-1 BertLayer) and select a module of layer 1 only, with the mouse
    group = page.locator("li[data-name='0-1'] > .row")
    group.locator("button.unfold").click()
    expect(page.locator("li[data-name='1'][aria-level='5']")).to_have_count(1)
    _row(page, "bert.encoder.layer.1.intermediate.dense").click()
    # the keyboard: search, into the tree, move, select
    page.keyboard.press("/")
    page.keyboard.type("pooler")
    expect(page.locator("#matches")).to_have_text("2 modules match (1 selectable)")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Space")
    n_modules, n_delta = _footer(page)
    assert n_modules == 4
    names = page.locator("#names").inner_text()
    assert names == '["query","layer.1.intermediate.dense","pooler.dense"]'
    page.screenshot(path=str(tmp_path / "picker-bert.png"))
    assert (tmp_path / "picker-bert.png").stat().st_size > 10_000
    page.click("#submit")
    delta = run.join()
    expect(page.locator("body")).to_have_attribute("data-state", "submitted")
    assert sorted(delta.modified_module_names) == sorted(
        [
            "bert.encoder.layer.0.attention.self.query",
            "bert.encoder.layer.1.attention.self.query",
            "bert.encoder.layer.1.intermediate.dense",
            "bert.pooler.dense",
        ]
    )
    assert delta.num_delta_parameters() == n_delta
    assert delta.config.modified_modules == ["query", "layer.1.intermediate.dense", "pooler.dense"]
    assert _no_picker_threads()


def test_t5_keyboard_only_regex_search_unfold_and_submit(page, monkeypatch):
    model = build("t5")
    cfg = AutoDeltaConfig.from_dict({"delta_type": "lora", "modified_modules": ["wo"]})
    run = Background(
        monkeypatch, lambda: AutoDeltaModel.from_config(cfg, backbone_model=model, interactive_modify=True)
    )
    page.goto(run.url())
    assert _footer(page)[0] == 4  # what the config named is preselected
    page.keyboard.press("/")
    page.keyboard.press("Control+a")
    page.keyboard.type(r"[r]SelfAttention\.(q|v)$")
    expect(page.locator("#matches")).to_have_text("8 modules match (8 selectable)")
    page.keyboard.press("Enter")
    assert _footer(page)[0] == 12
    page.keyboard.press("Control+a")
    page.keyboard.type("decoder.block.1.layer.1.EncDecAttention")
    page.keyboard.press("ArrowDown")  # to the first matching row: the EncDecAttention module (not selectable)
    page.keyboard.press("ArrowDown")  # its folded q,k,v,o
    focused = page.locator("li[role=treeitem]:focus")
    expect(focused).to_have_attribute("data-name", "q,k,v,o")
    page.keyboard.press("u")  # unfold the group
    page.keyboard.press("ArrowDown")
    expect(page.locator("li[role=treeitem]:focus")).to_have_attribute(
        "data-path", "decoder.block.1.layer.1.EncDecAttention.q"
    )
    page.keyboard.press("Space")
    n_modules, n_delta = _footer(page)
    assert n_modules == 13
    page.keyboard.press("Control+Enter")
    delta = run.join()
    expected = {n for n, _ in model.named_modules() if re.search(r"SelfAttention\.(q|v)$|DenseReluDense\.wo$", n)}
    expected.add("decoder.block.1.layer.1.EncDecAttention.q")
    assert set(delta.modified_module_names) == expected
    assert delta.num_delta_parameters() == n_delta
    assert _no_picker_threads()


def test_cancel_leaves_the_model_as_it_was(page, monkeypatch):
    model = build("bert")
    run = Background(
        monkeypatch,
        lambda: AutoDeltaModel.from_config({"delta_type": "lora"}, backbone_model=model, interactive_modify=True),
    )
    page.goto(run.url())
    _settled(page)
    page.click("#cancel")
    run.join()
    assert isinstance(run.error, PickerCancelledError)
    expect(page.locator("body")).to_have_attribute("data-state", "cancelled")
    assert not any(is_delta_layer(m) for m in model.modules())
    assert _no_picker_threads()


def test_wrong_token_is_refused(page):
    server = PickerServer(PickerModel(build("bert"), AutoDeltaConfig.from_dict({"delta_type": "lora"}))).start()
    try:
        wrong = server.url.replace(server.token, "x" * len(server.token))
        response = page.goto(wrong)
        assert response.status == 403 and "token" in page.content()
        api = page.request.post(
            f"http://127.0.0.1:{server.port}/api/submit",
            data={"selected": ["bert.pooler.dense"]},
            headers={"X-Picker-Token": "x" * len(server.token)},
        )
        assert api.status == 403
        assert not server._done.is_set()
        assert page.goto(server.url).status == 200
        _settled(page)
    finally:
        server.close()
    assert _no_picker_threads()


def test_timeout_shuts_the_server_down(page, monkeypatch):
    model = build("bert")
    run = Background(monkeypatch, lambda: picker.pick_modules(model, {"delta_type": "lora"}, timeout=3))
    page.goto(run.url())
    _settled(page)
    run.join()
    assert isinstance(run.error, PickerTimeoutError)
    page.click("#submit")  # the page is still open, the server is gone
    expect(page.locator("#error")).to_contain_text("Submit failed")
    assert _no_picker_threads()
