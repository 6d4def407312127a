"""The operator console in a real browser against one running local mesh: every page, an admin's actions, a plain user's view."""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageDraw, ImageFont
from playwright.sync_api import Browser, Page, ViewportSize, expect

from harness.mesh import Mesh
from tests.e2e.conftest import ADMIN_PASSWORD

DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
USER = "console-user"
USER_PASSWORD = "console-user-password-1"
SCRIPT_PROMPT = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"><b>bold?</b>'
TIMEOUT_MS = 60_000
LOAD_TIMEOUT_MS = 240_000  # loading a model starts its server process: slow on a busy 2-core machine
expect.set_options(timeout=TIMEOUT_MS)  # a password check (argon2) on a busy machine takes seconds


@dataclass
class Site:
    """The mesh's edge and an admin token for arranging and checking things behind the browser's back."""

    url: str
    admin_token: str

    def api(self, method: str, path: str, token: str | None = None, **kwargs: object) -> httpx.Response:
        headers = {"authorization": f"Bearer {token or self.admin_token}"}
        return httpx.request(method, self.url + path, headers=headers, timeout=60, **kwargs)  # type: ignore[arg-type]

    def model_state(self, model: str) -> str:
        models = self.api("GET", "/admin/models").json()["models"]
        return str(next(m for m in models if m["model"] == model)["state"])


@pytest.fixture(scope="module")
def site(mesh: Mesh) -> Site:
    url = mesh.edge_url
    answer = httpx.post(f"{url}/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD}, timeout=60)
    answer.raise_for_status()
    return Site(url, answer.json()["access_token"])


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    yield opened
    context.close()
    assert not errors, f"script errors in the console: {errors}"


def sign_in(page: Page, site: Site, username: str, password: str, route: str = "") -> None:
    page.goto(f"{site.url}/ui/{route}")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def shot(page: Page, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"))


def test_sign_in_by_keyboard_then_sign_out(page: Page, site: Site) -> None:
    page.goto(f"{site.url}/ui/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.keyboard.type("admin")  # the user name field has the focus
    page.keyboard.press("Tab")
    page.keyboard.type("wrong-password-123")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("invalid user name or password")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    stored = page.evaluate("sessionStorage.getItem('aigw.session')")
    refresh = re.search(r'"refresh":"([^"]+)"', stored)
    assert refresh is not None
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    # signing out revoked the refresh token on the server, not just in the page
    reused = httpx.post(
        f"{site.url}/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh.group(1)}, timeout=30
    )
    assert reused.status_code == 401


def test_overview_shows_models_and_backends(page: Page, site: Site, screenshots: Path) -> None:
    sign_in(page, site, "admin", ADMIN_PASSWORD)
    models = page.get_by_role("table", name="Models")
    row = models.get_by_role("row").filter(has_text="tiny-chat")
    expect(row).to_contain_text("loaded")
    expect(row.get_by_role("button", name="Stop")).to_be_enabled()
    expect(row.get_by_role("button", name="Start")).to_be_disabled()
    backends = page.get_by_role("table", name="Backends")
    expect(backends.get_by_role("row").filter(has_text="cpu-0")).to_contain_text("transformers")
    expect(backends.get_by_role("row").filter(has_text="tesseract-0")).to_contain_text("loaded")
    # a stop needs confirmation; declining changes nothing
    row.get_by_role("button", name="Stop").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Stop tiny-chat?")
    shot(page, screenshots, "confirm")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_have_count(0)
    assert site.model_state("tiny-chat") == "loaded"
    page.get_by_role("link", name="Overview").focus()
    shot(page, screenshots, "overview")


def test_chat_streams_and_user_text_stays_text(page: Page, site: Site, screenshots: Path) -> None:
    sign_in(page, site, "admin", ADMIN_PASSWORD, "#/playground")
    page.get_by_label("Model", exact=True).first.select_option("tiny-chat")
    page.get_by_label("Priority").first.select_option("high")
    page.get_by_label("Message").fill(SCRIPT_PROMPT)
    page.get_by_role("button", name="Send").click()
    status = page.locator("form", has=page.get_by_role("heading", name="Chat")).locator("p.facts")
    expect(status).to_contain_text("finished", timeout=TIMEOUT_MS)
    transcript = page.get_by_label("Conversation")
    expect(transcript.locator(".message.user pre")).to_have_text(SCRIPT_PROMPT)
    assert transcript.locator("script, img, b").count() == 0
    assert page.evaluate("window.__pwned") is None
    request_id = status.get_by_role("link").inner_text()
    job = site.api("GET", f"/v1/requests/{request_id}").json()["request"]
    assert job["state"] == "SUCCEEDED"
    assert job["priority"] == "PRIORITY_HIGH"
    answer = transcript.locator(".message.assistant pre").inner_text()
    assert answer.strip() == job["chat_result"]["message"]["content"].strip()
    shot(page, screenshots, "playground-chat")
    # the request's page shows the same prompt, as text, beside its answer
    status.get_by_role("link").click()
    prompt = page.get_by_role("region", name="Prompt")
    expect(prompt.locator("pre")).to_have_text(SCRIPT_PROMPT)
    assert prompt.locator("script, img, b").count() == 0
    expect(page.get_by_role("region", name="Answer")).to_be_visible()
    assert page.evaluate("window.__pwned") is None


def page_png() -> bytes:
    image = Image.new("RGB", (900, 220), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 48)
    draw.text((30, 40), "HELLO CONSOLE", fill="black", font=font)
    draw.text((30, 120), "invoice 4711", fill="black", font=font)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_ocr_upload_shows_text_beside_the_page(page: Page, site: Site, screenshots: Path) -> None:
    sign_in(page, site, "admin", ADMIN_PASSWORD, "#/playground")
    page.get_by_label("Document").set_input_files({"name": "scan.png", "mimeType": "image/png", "buffer": page_png()})
    expect(page.get_by_role("img", name="Preview of scan.png")).to_be_visible()
    page.get_by_label("Mode", exact=True).select_option("small")
    page.get_by_label("English").check()
    page.get_by_role("button", name="Recognise").click()
    text = page.get_by_label("Recognised text")
    expect(text).to_contain_text("HELLO CONSOLE", timeout=TIMEOUT_MS)
    expect(text).to_contain_text("eng")
    shot(page, screenshots, "playground-ocr")


def test_requests_history_filters_and_detail(page: Page, site: Site, screenshots: Path) -> None:
    submitted = site.api("POST", "/api/chat", json={"model": "tiny-chat", "prompt": "history entry", "max_tokens": 4})
    request_id = submitted.json()["request_id"]
    sign_in(page, site, "admin", ADMIN_PASSWORD, "#/requests")
    history = page.get_by_role("table", name="Requests, newest first")
    expect(history.get_by_role("link", name=request_id)).to_be_visible()
    page.get_by_label("Status").select_option("FAILED")
    page.get_by_role("button", name="Filter").click()
    expect(history.get_by_role("link", name=request_id)).to_have_count(0)
    page.get_by_label("Status").select_option("SUCCEEDED")
    page.get_by_label("Model").select_option("tiny-chat")
    page.get_by_role("button", name="Filter").click()
    expect(history.get_by_role("link", name=request_id)).to_be_visible()
    shot(page, screenshots, "requests")
    history.get_by_role("link", name=request_id).click()
    expect(page.get_by_role("heading", name=f"Request {request_id}")).to_be_visible()
    expect(page.get_by_role("definition").filter(has_text="succeeded")).to_be_visible()
    expect(page.get_by_role("heading", name="Answer")).to_be_visible()
    shot(page, screenshots, "request-detail")


def test_stop_cancel_a_waiting_request_and_start_again(page: Page, site: Site, screenshots: Path) -> None:
    sign_in(page, site, "admin", ADMIN_PASSWORD)
    row = page.get_by_role("table", name="Models").get_by_role("row").filter(has_text="tiny-chat")
    try:
        row.get_by_role("button", name="Stop").click()
        page.get_by_role("dialog").get_by_role("button", name="Stop tiny-chat").click()
        expect(page.get_by_role("status").filter(has_text="Stop tiny-chat: ")).to_contain_text("cpu-0", timeout=TIMEOUT_MS)
        expect(row).to_contain_text("stopped")
        assert (
            next(m for m in site.api("GET", "/admin/models").json()["models"] if m["model"] == "tiny-chat")["state"] == "stopped"
        )
        # with the model stopped a request waits in its queue, so it can be cancelled from its page
        waiting = site.api("POST", "/api/chat", json={"model": "tiny-chat", "prompt": "wait", "async": True}).json()
        page.goto(f"{site.url}/ui/#/request/{waiting['request_id']}")
        expect(page.get_by_role("definition").filter(has_text="queued")).to_be_visible()
        page.get_by_role("button", name="Cancel request").click()
        page.get_by_role("dialog").get_by_role("button", name="Cancel request").click()
        expect(page.get_by_role("status").filter(has_text="Cancellation requested")).to_be_visible()
        expect(page.get_by_role("definition").filter(has_text="cancelled")).to_be_visible()
        assert site.api("GET", f"/v1/requests/{waiting['request_id']}").json()["request"]["state"] == "CANCELLED"
        page.get_by_role("link", name="Overview").click()
        row.get_by_role("button", name="Start").click()
        page.get_by_role("dialog").get_by_role("button", name="Start tiny-chat").click()
        loading = page.get_by_role("status").filter(has_text="Start tiny-chat: ")
        expect(loading).to_contain_text("cpu-0", timeout=LOAD_TIMEOUT_MS)
        expect(row).to_contain_text("loaded")
        shot(page, screenshots, "overview-action")
    finally:
        site.api("POST", "/admin/models/tiny-chat/start")


def finished_last_hour(site: Site, model: str) -> int:
    minutes = site.api("GET", f"/admin/queue/{model}/series").json()["minutes"]
    return sum(m.get("succeeded", 0) + m.get("failed", 0) + m.get("cancelled", 0) for m in minutes)


def hour_summary(count: int) -> re.Pattern[str]:
    return re.compile(rf"last hour: {count} finished")


def test_queues_show_the_past_hour_on_opening_and_update_by_themselves(
    browser: Browser, page: Page, site: Site, screenshots: Path
) -> None:
    # requests made before the page is opened: the queue counted them, the page has never seen them
    for prompt in ("earlier one", "earlier two"):
        answer = site.api("POST", "/api/chat", json={"model": "tiny-chat", "prompt": prompt, "max_tokens": 2})
        assert answer.status_code == 200, answer.text
    before = finished_last_hour(site, "tiny-chat")
    assert before >= 2
    sign_in(page, site, "admin", ADMIN_PASSWORD, "#/queues")
    panel = page.get_by_role("region", name="tiny-chat")
    expect(panel.get_by_role("table", name="tiny-chat now")).to_contain_text("Waiting")
    expect(panel.get_by_text(hour_summary(before))).to_be_visible(timeout=4_000)  # the first load, not a later poll
    expect(panel.get_by_role("img", name=re.compile("tiny-chat: total time percentiles"))).to_have_attribute(
        "aria-label", re.compile(r"p50: [\d.]+ ms, .*p95: [\d.]+ ms.*p99: [1-9][\d.]* ms")
    )
    expect(panel.get_by_role("img", name=re.compile("tiny-chat: throughput"))).to_have_attribute(
        "aria-label", re.compile(r"finished: [\d.]+ /min")
    )
    for name in ("queue wait percentiles", "peak running and waiting", "peak utilisation"):
        expect(panel.get_by_role("img", name=re.compile(name))).to_be_visible()
    site.api("POST", "/api/chat", json={"model": "tiny-chat", "prompt": "while open", "max_tokens": 2})
    expect(panel.get_by_text(hour_summary(before + 1))).to_be_visible(timeout=15_000)  # polled, no reload
    shot(page, screenshots, "queues")
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    context.set_default_timeout(TIMEOUT_MS)
    phone = context.new_page()
    try:
        sign_in(phone, site, "admin", ADMIN_PASSWORD, "#/queues")
        chart = phone.get_by_role("img", name=re.compile("tiny-chat: throughput"))
        expect(chart).to_be_visible()
        box = chart.bounding_box()
        assert box is not None
        assert box["width"] >= 300, f"the chart is {box['width']} px wide on a phone"
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"] + 1, f"the page is {width} px wide on a {PHONE['width']} px screen"
        chart.scroll_into_view_if_needed()
        shot(phone, screenshots, "queues-phone")
    finally:
        context.close()


def test_sleep_wake_refused_on_a_backend_without_sleep_mode(page: Page, site: Site, screenshots: Path) -> None:
    sign_in(page, site, "admin", ADMIN_PASSWORD)
    row = page.get_by_role("table", name="Backends").get_by_role("row").filter(has_text="cpu-0")
    expect(row).to_contain_text("loaded")
    expect(row.get_by_role("button", name="Wake")).to_be_disabled()  # only a sleeping backend wakes
    row.get_by_label("Sleep level for cpu-0").select_option("2")
    row.get_by_role("button", name="Sleep").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Put cpu-0 to sleep at level 2: weights discarded?")
    dialog.get_by_role("button", name="Sleep cpu-0").click()
    outcome = page.get_by_role("alert").filter(has_text="Sleep cpu-0 failed: ")
    expect(outcome).to_contain_text("backend cpu-0 has no sleep mode")
    expect(row).to_contain_text("loaded")
    backends = site.api("GET", "/admin/models").json()["backends"]
    cpu = next(b for b in backends if b["status"]["backend"] == "cpu-0")
    assert cpu["status"]["state"] == "BACKEND_STATE_READY"
    assert site.model_state("tiny-chat") == "loaded"


def test_crashes_and_autoswitch(page: Page, site: Site, screenshots: Path) -> None:
    sign_in(page, site, "admin", ADMIN_PASSWORD, "#/crashes")
    log = page.get_by_role("table", name="Crash log, newest first")
    expect(log).to_be_visible()
    expect(log.get_by_role("row").nth(1)).to_be_visible()
    page.get_by_label("Service").select_option("queue")
    page.get_by_role("button", name="Filter").click()
    expect(log).to_be_visible()
    shot(page, screenshots, "crashes")
    page.get_by_role("link", name="Auto-switch").click()
    expect(page.get_by_role("table", name="Plan by backend")).to_be_visible()
    expect(page.get_by_role("table", name="Decisions, newest first")).to_be_visible()
    expect(page.get_by_text(re.compile(r"Auto-switching is (on|off) · usage window"))).to_be_visible()


def test_config_edit_and_conflict_is_not_overwritten(page: Page, site: Site, screenshots: Path) -> None:
    sign_in(page, site, "admin", ADMIN_PASSWORD, "#/config/tiny-chat")
    waiting = page.get_by_label(re.compile("^Waiting at most"))
    expect(waiting).to_have_value(re.compile(r"\d+"))
    before = site.api("GET", "/admin/models/tiny-chat/config").json()["config"]
    waiting.fill("17")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status").filter(has_text=f"Saved as version {int(before['version']) + 1}")).to_be_visible()
    assert site.api("GET", "/admin/models/tiny-chat/config").json()["config"]["max_waiting"] == 17
    # someone else changes it meanwhile; the console's next save must not overwrite that
    now = site.api("GET", "/admin/models/tiny-chat/config").json()["config"]
    other = site.api(
        "PUT", "/admin/models/tiny-chat/config", json={"expected_version": now["version"], "patch": {"max_waiting": 23}}
    )
    assert other.status_code == 200
    waiting.fill("5")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("alert")).to_contain_text("someone changed this configuration")
    assert site.api("GET", "/admin/models/tiny-chat/config").json()["config"]["max_waiting"] == 23
    shot(page, screenshots, "config-conflict")
    page.get_by_role("button", name="Load the current configuration").click()
    expect(page.get_by_label(re.compile("^Waiting at most"))).to_have_value("23")
    site.api(
        "PUT", "/admin/models/tiny-chat/config", json={"expected_version": int(now["version"]) + 1, "patch": {"max_waiting": 10}}
    )


def test_admin_creates_a_user_and_an_api_key_shown_once(page: Page, site: Site, screenshots: Path) -> None:
    sign_in(page, site, "admin", ADMIN_PASSWORD, "#/users")
    page.get_by_label("New user name").fill(USER)
    page.get_by_label("Password (12+ characters)").fill(USER_PASSWORD)
    page.get_by_role("button", name="Create user").click()
    expect(page.get_by_role("status").filter(has_text=f"User {USER} created.")).to_be_visible()
    expect(page.get_by_role("table", name="Users").get_by_role("row").filter(has_text=USER)).to_contain_text("active")
    page.get_by_label("Key description").fill("<i>ci robot</i>")
    page.get_by_role("button", name="Create API key").click()
    secret = page.get_by_role("textbox", name="New API key")
    key = secret.input_value()
    assert re.fullmatch(r"aigw_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", key)
    key_id = key.split("_")[1]
    row = page.get_by_role("table", name="API keys").get_by_role("row").filter(has_text=key_id)
    expect(row).to_contain_text("<i>ci robot</i>")  # the description is shown as typed, not as markup
    assert site.api("GET", "/v1/models", token=key).status_code == 200
    shot(page, screenshots, "users")
    page.reload()
    expect(page.get_by_role("table", name="API keys")).to_be_visible()
    expect(page.get_by_role("textbox", name="New API key")).to_have_count(0)  # shown once: gone after leaving the page
    row.get_by_role("button", name="Revoke").click()
    page.get_by_role("dialog").get_by_role("button", name="Revoke").click()
    expect(row).to_contain_text("revoked")
    deadline = time.monotonic() + 10  # routers may remember a key's verdict for a few seconds
    while site.api("GET", "/v1/models", token=key).status_code != 401:
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.5)


def test_a_plain_user_sees_only_their_part(browser: Browser, site: Site, screenshots: Path) -> None:
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        sign_in(page, site, USER, USER_PASSWORD)
        nav = page.get_by_role("navigation", name="Pages")
        expect(nav.get_by_role("link")).to_have_text(["Overview", "Requests", "Playground"])
        expect(page.get_by_role("table", name="Models")).to_contain_text("tiny-chat")
        expect(page.get_by_text("shown to administrators")).to_be_visible()
        expect(page.get_by_role("button", name=re.compile("^(Sleep|Wake)"))).to_have_count(0)
        page.goto(f"{site.url}/ui/#/queues")  # not offered, and not reachable by typing the address
        expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        token = page.evaluate("JSON.parse(sessionStorage.getItem('aigw.session')).access")
        assert site.api("GET", "/admin/requests", token=token).status_code == 403
        nav.get_by_role("link", name="Playground").click()
        page.get_by_label("Model", exact=True).first.select_option("tiny-chat")
        page.get_by_label("Message").fill("hello from a phone")
        page.get_by_role("button", name="Send").click()
        status = page.locator("form", has=page.get_by_role("heading", name="Chat")).locator("p.facts")
        expect(status).to_contain_text("finished")
        own = status.get_by_role("link").inner_text()
        # the history lists what the user sent from anywhere (here straight to the API), never someone else's
        outside = site.api("POST", "/api/chat", json={"model": "tiny-chat", "prompt": "by curl", "max_tokens": 2}, token=token)
        elsewhere = outside.json()["request_id"]
        others = site.api("POST", "/api/chat", json={"model": "tiny-chat", "prompt": "admin's", "max_tokens": 2}).json()
        nav.get_by_role("link", name="Requests").click()
        mine = page.get_by_role("table", name="Your requests, newest first")
        expect(mine.get_by_role("link", name=own)).to_be_visible()
        expect(mine.get_by_role("link", name=elsewhere)).to_be_visible()
        expect(mine.get_by_role("link", name=others["request_id"])).to_have_count(0)
        assert page.get_by_role("table", name="Requests, newest first", exact=True).count() == 0
        page.get_by_label("Status").select_option("FAILED")
        page.get_by_role("button", name="Filter").click()
        expect(mine.get_by_role("link", name=own)).to_have_count(0)
        page.get_by_label("Status").select_option("SUCCEEDED")
        page.get_by_label("Model").select_option("tiny-chat")
        page.get_by_role("button", name="Filter").click()
        expect(mine.get_by_role("link", name=own)).to_be_visible()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"] + 1, f"the page is {width} px wide on a {PHONE['width']} px screen"
        shot(page, screenshots, "phone-user")
        # someone else's request is not found, exactly like an unknown one
        page.goto(f"{site.url}/ui/#/request/{others['request_id']}")
        expect(page.get_by_role("alert")).to_contain_text("not found")
    finally:
        context.close()
