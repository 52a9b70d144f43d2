"""Fixtures of the dashboard's browser tests (run by `bash .ci/browser`).

Environment: BASE_URL (the service), TOKEN_A / TOKEN_B / TOKEN_BROKE (API bearer tokens of
"Shop A", "Shop B" and "Broke Shop"), PASSWORD (every dashboard user's), SCREENSHOTS (where
PNGs go).

Tests drive Debian's chromium (`playwright install` cannot download in CI) and assert on what a
person sees; they wait with Playwright's `expect` timeouts, never with sleeps.
"""

import json
import os
import pathlib
import re
import urllib.error
import urllib.request
import uuid

import pytest
from playwright.sync_api import Page, expect, sync_playwright

BASE_URL = os.environ.get("BASE_URL", "http://127.0.0.1:18282").rstrip("/")
PASSWORD = os.environ.get("PASSWORD", "correct horse battery")
SCREENSHOTS = pathlib.Path(os.environ.get("SCREENSHOTS", "target/screenshots"))
AXE = pathlib.Path(__file__).parent / "vendor" / "axe.min.js"
CHROMIUM = "/usr/bin/chromium"

# Pages answer within milliseconds; the preview debounces for ~0.5 s. Tests that wait for a
# send to finish pass their own, longer timeout.
expect.set_options(timeout=10_000)


def unique(prefix: str) -> str:
    """A name no other test (or earlier run on the same database) uses."""
    return f"{prefix} {uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------------------------------------
# The browser


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            # CI runs as root, where chromium's sandbox cannot start
            args=["--no-sandbox"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh context (no cookies) per test; uncaught script errors fail the test."""
    context = browser.new_context(base_url=BASE_URL, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    script_errors = []
    page.on("pageerror", lambda error: script_errors.append(f"{page.url}: {error}"))
    yield page
    context.close()
    assert not script_errors, "uncaught script errors in the page:\n" + "\n".join(script_errors)


@pytest.fixture(scope="session")
def signed_in():
    """signed_in(page, email[, password]): signs in through the form; on /app/campaigns after."""

    def sign_in(page: Page, email: str, password: str = PASSWORD) -> Page:
        response = page.goto("/app/")
        assert response is not None and response.ok, (
            f"GET /app/ answered {response and response.status}: {response and response.url}"
        )
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        page.get_by_label("Email", exact=True).fill(email)
        page.get_by_label("Password", exact=True).fill(password)
        page.get_by_role("button", name="Sign in", exact=True).click()
        expect(page).to_have_url(re.compile(r"/app/campaigns(\?.*)?$"))
        expect(page.get_by_role("heading", name="Campaigns", exact=True)).to_be_visible()
        return page

    return sign_in


@pytest.fixture(scope="session")
def shot():
    """shot(page, name): a full-page PNG at $SCREENSHOTS/name.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(page: Page, name: str) -> pathlib.Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


class AxeViolations(list):
    """axe-core violations; printed as one line per rule with its targets and help."""

    def __str__(self):
        lines = []
        for v in self:
            targets = ", ".join(" ".join(node["target"]) for node in v["nodes"])
            lines.append(f"{v['impact']} {v['id']}: {v['help']} ({v['helpUrl']}) at {targets}")
        return "\n".join(lines)

    __repr__ = __str__


_AXE_RUN = """async () => {
    const result = await axe.run(document, { resultTypes: ["violations"] });
    return result.violations.map(v => ({
        id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
        nodes: v.nodes.map(n => ({ target: n.target.map(String) })),
    }));
}"""


@pytest.fixture(scope="session")
def axe():
    """axe(page): the page's serious and critical axe-core violations (empty when none)."""

    def run(page: Page) -> AxeViolations:
        try:
            page.add_script_tag(path=str(AXE))
        except Exception:  # noqa: BLE001 - a strict CSP can refuse the inline tag
            pass
        if page.evaluate("typeof window.axe") != "object":
            # the page's Content-Security-Policy blocked the tag: evaluate it instead
            page.evaluate(AXE.read_text(encoding="utf-8"))
        found = page.evaluate(_AXE_RUN)
        return AxeViolations(v for v in found if v["impact"] in ("serious", "critical"))

    return run


# ---------------------------------------------------------------------------------------------
# The JSON API, for seeding data


class ApiError(AssertionError):
    pass


class Api:
    """The JSON API as one tenant (`Authorization: Bearer TOKEN`)."""

    def __init__(self, token: str):
        self.token = token

    def request(self, method: str, path: str, body=None, ok: bool = True):
        """(status, decoded JSON or text); with ok=True a non-2xx answer fails the test."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(BASE_URL + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                status, raw = answer.status, answer.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        text = raw.decode("utf-8", "replace")
        try:
            payload = json.loads(text) if text else None
        except ValueError:
            payload = text
        if ok and not 200 <= status < 300:
            raise ApiError(f"{method} {path} answered {status}: {text[:500]}")
        return status, payload

    def get(self, path: str):
        return self.request("GET", path)[1]

    def post(self, path: str, body=None):
        return self.request("POST", path, body)[1]

    def put(self, path: str, body=None):
        return self.request("PUT", path, body)[1]

    # -- seeding helpers ---------------------------------------------------------------------

    def contacts(self, contacts: list) -> list:
        """Saves contacts ([{"phone": …, "firstName": …}]); answers their ids in input order."""
        saved = self.post("/api/v1/contacts", contacts)
        # {"saved": N, "contacts": [{"id": …}, …]} today; a bare array is accepted too
        rows = saved.get("contacts", saved) if isinstance(saved, dict) else saved
        assert isinstance(rows, list) and all("id" in r for r in rows), saved
        return [r["id"] for r in rows]

    def new_list(self, name: str, contacts: list) -> int:
        """A list of new contacts; answers its id."""
        ids = self.contacts(contacts)
        return self.post("/api/v1/lists", {"name": name, "contactIds": ids})["id"]

    def campaign(self, name: str, phones: list, body: str = "Hello {{firstName}}", **fields) -> int:
        """A draft (or, with scheduledAt, scheduled) campaign to inline phones; answers its id."""
        definition = {"name": name, "body": body, "audience": {"phones": phones}, **fields}
        return self.post("/api/v1/campaigns", definition)["id"]

    def enqueue(self, campaign_id: int):
        return self.post(f"/api/v1/campaigns/{campaign_id}/enqueue")


@pytest.fixture(scope="session")
def api():
    """api(token): the JSON API as that token's tenant."""
    return Api


def _token(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set (run the tests with `bash .ci/browser`)")
    return value


@pytest.fixture(scope="session")
def token_a():
    return _token("TOKEN_A")


@pytest.fixture(scope="session")
def token_b():
    return _token("TOKEN_B")


@pytest.fixture(scope="session")
def token_broke():
    return _token("TOKEN_BROKE")


@pytest.fixture(scope="session", autouse=True)
def no_quiet_hours():
    """Marketing campaigns wait out quiet hours (22:00-09:00 UTC by default): the tenants get
    none, so sends finish at any time of day. Skipped for tokens not set (the test that needs
    one fails on its own)."""
    for name in ("TOKEN_A", "TOKEN_B", "TOKEN_BROKE"):
        token = os.environ.get(name)
        if token:
            Api(token).put(
                "/api/v1/me/marketing-rules",
                {"timeZone": "UTC", "quietHours": None, "marketingCap24h": None},
            )
