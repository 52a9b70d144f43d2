"""The merchant dashboard (/app) as a person uses it, against the UI contract.

Run by `bash .ci/browser`, which starts the service on a scratch database with the tenants
"Shop A" (users a@shop.test, locked@shop.test), "Shop B" (b@shop.test) and "Broke Shop"
(broke@shop.test, 1 credit). Each test seeds what it needs through the JSON API, with its own
phones, so the tests do not depend on one another's order.
"""

import json
import os
import re
import urllib.request
from datetime import datetime, timedelta, timezone

from conftest import PASSWORD, unique
from playwright.sync_api import Page, expect

SIM_URL = os.environ["SIM_URL"]  # the built-in Mitto simulator (scripted faults)
SEND_TIMEOUT = 60_000  # ms: a small campaign sent through the built-in simulator

# Every status of a campaign; each has its badge and filter option.
STATUSES = ["draft", "scheduled", "sending", "paused", "completed", "failed", "cancelled"]


def button(page: Page, name: str):
    return page.get_by_role("button", name=name, exact=True)


def status(page: Page):
    return page.get_by_test_id("status")


def figure(page: Page, name: str):
    return page.locator(f"[data-figure={name}] .value")


def open_campaign(page: Page, campaign_id: int, name: str):
    """The campaign's detail page, checked to be that campaign's."""
    response = page.goto(f"/app/campaigns/{campaign_id}")
    assert response is not None and response.status == 200, response and response.status
    expect(page.get_by_role("heading", level=1)).to_have_text(name)


def number(n: int) -> re.Pattern:
    """Text holding the number n on its own (cells' texts run together: "line 5bad phone")."""
    return re.compile(rf"(?<!\d){n}(?!\d)")


def phones(prefix: str, count: int, start: int = 0) -> list:
    """count distinct E.164 numbers: prefix followed by a two-digit counter."""
    return [f"{prefix}{n:02d}" for n in range(start, start + count)]


# ---------------------------------------------------------------------------------------------
# Signing in


def test_signing_in_with_the_right_password_works_and_a_wrong_one_is_refused(page, shot):
    page.goto("/app/campaigns")
    # no session: the sign-in form, remembering where the person wanted to go
    expect(page).to_have_url(re.compile(r"/app/login\?next="))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    shot(page, "sign-in")

    page.get_by_label("Email", exact=True).fill("a@shop.test")
    page.get_by_label("Password", exact=True).fill("not the password")
    button(page, "Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Email or password is wrong")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    shot(page, "sign-in-refused")

    page.get_by_label("Email", exact=True).fill("a@shop.test")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    button(page, "Sign in").click()
    expect(page).to_have_url(re.compile(r"/app/campaigns(\?.*)?$"))
    expect(page.get_by_role("heading", name="Campaigns", exact=True)).to_be_visible()
    nav = page.get_by_role("navigation")
    for link in ("Campaigns", "Contacts", "Account"):
        expect(nav.get_by_role("link", name=link, exact=True)).to_be_visible()
    shot(page, "signed-in")

    # the contract puts "Sign out" with the navigation, not necessarily inside <nav>
    button(page, "Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(button(page, "Sign out")).to_have_count(0)

    # the session is gone: the campaigns page sends the person back to the form
    page.goto("/app/campaigns")
    expect(page).to_have_url(re.compile(r"/app/login\?next="))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_five_wrong_passwords_lock_the_account_even_against_the_right_one(page, shot):
    page.goto("/app/")
    for _ in range(5):
        page.get_by_label("Email", exact=True).fill("locked@shop.test")
        page.get_by_label("Password", exact=True).fill("wrong horse battery")
        button(page, "Sign in").click()
        # the fifth refusal may already say the account is locked
        expect(page.get_by_role("alert")).to_contain_text(
            re.compile("Email or password is wrong|Too many failed sign-ins")
        )

    page.get_by_label("Email", exact=True).fill("locked@shop.test")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    button(page, "Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Too many failed sign-ins")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page).not_to_have_url(re.compile(r"/app/campaigns"))
    shot(page, "sign-in-locked")


# ---------------------------------------------------------------------------------------------
# Contacts and compose


def test_importing_contacts_reports_the_bad_row_by_its_line(page, signed_in, shot, tmp_path):
    csv = tmp_path / "contacts.csv"
    csv.write_text(
        "phone,first_name\n"
        "+306984303401,Ann\n"
        "+306984303402,Bea\n"
        "+306984303403,Cid\n"
        "not-a-phone,Bob\n",  # line 5, counting the header as line 1
        encoding="utf-8",
    )
    signed_in(page, "a@shop.test")
    page.get_by_role("navigation").get_by_role("link", name="Contacts", exact=True).click()
    expect(page).to_have_url(re.compile(r"/app/contacts"))

    page.get_by_label("CSV file").set_input_files(str(csv))
    page.get_by_label("New list name").fill("Browser list")
    button(page, "Import").click()

    result = page.get_by_test_id("import-result")
    expect(result).to_contain_text("Imported 3 contacts")
    errors = page.get_by_test_id("import-errors")
    expect(errors).to_be_visible()
    # one bad row, named by its line; cells are matched one by one (a row's text runs them
    # together: "Browser list32026-12-07 01:09 UTC")
    line = errors.get_by_role("row").filter(has=page.locator("td, th").filter(has_text=number(5)))
    expect(line).to_have_count(1)

    lists = page.get_by_test_id("lists")
    row = lists.get_by_role("row").filter(has_text="Browser list")
    expect(row).to_have_count(1)
    expect(row.locator("td, th").filter(has_text=number(3))).to_have_count(1)
    shot(page, "contacts-imported")


def test_composing_a_campaign_shows_its_cost_before_it_is_saved(
    page, signed_in, shot, api, token_a
):
    list_name = unique("Compose list")
    api(token_a).new_list(
        list_name,
        [
            {"phone": "+306984303501", "firstName": "Ann"},
            {"phone": "+306984303502", "firstName": "Bea"},
            {"phone": "+306984303503", "firstName": "Cid"},
        ],
    )
    name = unique("Compose")
    signed_in(page, "a@shop.test")
    page.get_by_role("link", name="New campaign", exact=True).click()
    expect(page).to_have_url(re.compile(r"/app/campaigns/new$"))

    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Text", exact=True).fill("Hi {{firstName}}, 10% off today")
    page.get_by_role("group", name="Lists").get_by_label(list_name, exact=True).check()

    preview = page.get_by_test_id("preview")
    expect(preview.locator("[data-preview=recipients]")).to_have_text(number(3))
    expect(preview.locator("[data-preview=encoding]")).to_have_text(re.compile("GSM-7"))
    cost = preview.locator("[data-preview=cost]")
    expect(cost).to_have_text(re.compile(r"[1-9]"))
    # every recipient takes at least one segment, one credit each
    assert credits(cost.inner_text()) >= 3, cost.inner_text()
    assert credits(preview.locator("[data-preview=segments]").inner_text()) >= 1
    expect(preview.locator("[data-preview=balance]")).to_have_text(re.compile(r"\d"))
    shot(page, "compose")

    button(page, "Save draft").click()
    expect(page).to_have_url(re.compile(r"/app/campaigns/\d+$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(name)
    expect(status(page)).to_have_text("draft")
    shot(page, "compose-saved")


def credits(text: str) -> int:
    """The first number in a text, thousands separators (',', '.', spaces) dropped."""
    found = re.search(r"\d[\d,.\s\u00a0\u202f]*", text)
    assert found, f"no number in {text!r}"
    return int(re.sub(r"\D", "", found.group(0)))


# ---------------------------------------------------------------------------------------------
# Campaign lifecycle


def test_sending_a_campaign_shows_it_finish_without_a_reload(page, signed_in, shot, api, token_a):
    name = unique("Send")
    campaign_id = api(token_a).campaign(name, phones("+3069843040", 50))
    signed_in(page, "a@shop.test")
    open_campaign(page, campaign_id, name)
    expect(status(page)).to_have_text("draft")
    expect(page.get_by_test_id("audience")).to_contain_text("50 recipients")

    page.evaluate("window.__noReload = 1")
    button(page, "Send now").click()
    # what a draft would take is not shown once it is sending
    expect(page.get_by_test_id("audience")).to_have_count(0)
    expect(status(page)).to_have_text("completed", timeout=SEND_TIMEOUT)
    expect(page.get_by_test_id("progress-text")).to_have_text("100%", timeout=SEND_TIMEOUT)
    expect(page.get_by_test_id("progress")).to_have_attribute("value", "100")
    expect(figure(page, "sent")).to_have_text("50", timeout=SEND_TIMEOUT)
    expect(figure(page, "total")).to_have_text("50")
    # delivery reports follow within seconds (the simulator's 0.2-2 s): every message final
    page.wait_for_function(
        """() => {
            const value = name => Number(
                document.querySelector(`[data-figure=${name}] .value`)?.textContent.trim());
            return value("pending") === 0 && value("delivered") + value("failed") === 50;
        }""",
        timeout=SEND_TIMEOUT,
    )
    expect(figure(page, "pending")).to_have_text("0")
    expect(figure(page, "deliveredRate")).to_have_text(re.compile(r"^\d{1,3}\.\d%$"))
    assert page.evaluate("window.__noReload") == 1, "the page was reloaded"
    # what a completed campaign no longer allows
    for action in ("Send now", "Pause", "Resume", "Cancel campaign"):
        expect(button(page, action)).to_be_disabled()
    chart = page.get_by_test_id("chart")
    expect(chart).to_have_attribute("role", "img")
    expect(chart).to_have_attribute("aria-label", re.compile(r"\S"))
    # the tables read from the rows follow too: the provider's "Delivered" count reaches the
    # card's, and every failed delivery is listed, still without a reload
    delivered = figure(page, "delivered").inner_text().strip()
    failed = int(figure(page, "failed").inner_text().strip())
    breakdown = page.get_by_test_id("delivery-breakdown")
    expect(breakdown.get_by_role("row", name=f"Delivered {delivered}", exact=True)).to_be_visible(
        timeout=SEND_TIMEOUT
    )
    failed_rows = page.get_by_test_id("failed-recipients").locator("tbody tr")
    if 0 < failed <= 25:  # one page of failed recipients
        expect(failed_rows).to_have_count(failed, timeout=SEND_TIMEOUT)
    assert page.evaluate("window.__noReload") == 1, "the page was reloaded"
    shot(page, "send-completed")
    shot(page, "detail")

    page.get_by_role("navigation").get_by_role("link", name="Campaigns", exact=True).click()
    row = page.locator(f'tr[data-campaign-id="{campaign_id}"]')
    expect(row.get_by_role("link", name=name, exact=True)).to_have_attribute(
        "href", re.compile(rf"/app/campaigns/{campaign_id}$")
    )
    expect(row.locator(".badge")).to_have_text("completed")
    expect(row.locator(".badge")).to_have_class(re.compile(r"\bbadge-completed\b"))
    expect(row.locator('[data-col="sent"]')).to_have_text("50")
    expect(row.locator('[data-col="total"]')).to_have_text("50")
    expect(row.locator('[data-col="progress"]')).to_have_text("100%")
    shot(page, "list")


def test_retry_failed_is_enabled_only_when_there_is_something_to_retry(
    page, signed_in, shot, api, token_a
):
    a = api(token_a)
    draft_name = unique("Retry draft")
    draft = a.campaign(draft_name, phones("+3069843050", 3))
    done_name = unique("Retry done")
    done = a.campaign(done_name, phones("+3069843051", 3))
    a.enqueue(done)

    signed_in(page, "a@shop.test")
    open_campaign(page, draft, draft_name)
    expect(status(page)).to_have_text("draft")
    expect(button(page, "Retry failed")).to_be_disabled()
    expect(button(page, "Send now")).to_be_enabled()
    shot(page, "retry-draft")

    # the built-in simulator refuses no well-formed send, so this one has no failed sends
    open_campaign(page, done, done_name)
    expect(status(page)).to_have_text("completed", timeout=SEND_TIMEOUT)
    expect(button(page, "Retry failed")).to_be_disabled()
    shot(page, "retry-completed")

    # a provider outage longer than every retry: the sends fail, and may be retried
    outage_name = unique("Retry outage")
    outage = a.campaign(outage_name, phones("+3069843052", 3))
    open_campaign(page, outage, outage_name)
    script = json.dumps([{"kind": "status", "status": 503}] * 2).encode()
    request = urllib.request.Request(
        f"{SIM_URL.rstrip('/')}/_sim/script",
        data=script,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(request, timeout=10).close()
    button(page, "Send now").click()
    # every send failed: so did the campaign
    expect(status(page)).to_have_text("failed", timeout=SEND_TIMEOUT)
    expect(figure(page, "failed")).to_have_text("3", timeout=SEND_TIMEOUT)
    expect(button(page, "Retry failed")).to_be_enabled(timeout=SEND_TIMEOUT)
    shot(page, "retry-offered")
    button(page, "Retry failed").click()
    expect(figure(page, "sent")).to_have_text("3", timeout=SEND_TIMEOUT)
    expect(status(page)).to_have_text("completed", timeout=SEND_TIMEOUT)
    expect(button(page, "Retry failed")).to_be_disabled(timeout=SEND_TIMEOUT)
    shot(page, "retry-done")


def test_cancelling_asks_for_confirmation_first(page, signed_in, shot, api, token_a):
    name = unique("Scheduled")
    tomorrow = (datetime.now(timezone.utc) + timedelta(days=1)).replace(microsecond=0)
    campaign_id = api(token_a).campaign(
        name, phones("+3069843070", 1), scheduledAt=tomorrow.isoformat().replace("+00:00", "Z")
    )
    signed_in(page, "a@shop.test")
    open_campaign(page, campaign_id, name)
    expect(status(page)).to_have_text("scheduled")

    changes, asked = [], []
    page.on("request", lambda r: r.method != "GET" and changes.append(f"{r.method} {r.url}"))

    def answer(accept: bool):
        def handle(dialog):
            asked.append(dialog.type)
            dialog.accept() if accept else dialog.dismiss()

        return handle

    page.once("dialog", answer(False))
    button(page, "Cancel campaign").click()
    expect(status(page)).to_have_text("scheduled")
    expect(button(page, "Cancel campaign")).to_be_enabled()
    assert asked == ["confirm"], f"cancelling asked no window.confirm question: {asked}"
    # what the server holds, after anything the click may have sent
    page.reload()
    expect(status(page)).to_have_text("scheduled")
    assert changes == [], f"dismissing the confirmation still sent {changes}"
    shot(page, "cancel-dismissed")

    page.once("dialog", answer(True))
    button(page, "Cancel campaign").click()
    expect(status(page)).to_have_text("cancelled")
    assert asked == ["confirm", "confirm"], asked
    for action in ("Pause", "Resume", "Cancel campaign", "Send now", "Unschedule"):
        expect(button(page, action)).to_be_disabled()
    page.reload()
    expect(status(page)).to_have_text("cancelled")
    shot(page, "cancel-accepted")


def test_an_action_the_server_refuses_shows_its_message(page, signed_in, shot, api, token_broke):
    name = unique("Broke")
    campaign_id = api(token_broke).campaign(name, phones("+3069843060", 3))
    signed_in(page, "broke@shop.test")
    open_campaign(page, campaign_id, name)
    expect(status(page)).to_have_text("draft")

    button(page, "Send now").click()
    expect(page.get_by_test_id("action-error")).to_contain_text("credits")
    expect(page.get_by_role("alert").filter(has_text="credits")).to_be_visible()
    expect(status(page)).to_have_text("draft")
    expect(button(page, "Send now")).to_be_enabled()
    shot(page, "action-refused")


# ---------------------------------------------------------------------------------------------
# Isolation and escaping


def test_another_tenants_campaign_is_not_found(page, signed_in, shot, api, token_b):
    campaign_id = api(token_b).campaign(unique("Shop B only"), phones("+3069843080", 1))
    signed_in(page, "a@shop.test")

    response = page.goto(f"/app/campaigns/{campaign_id}")
    assert response is not None and response.status == 404, response and response.status
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    expect(page.get_by_text("Shop B only")).to_have_count(0)
    shot(page, "not-found")

    # an id nobody has answers the same
    response = page.goto("/app/campaigns/987654321")
    assert response is not None and response.status == 404, response and response.status
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()


def test_a_campaign_name_with_markup_renders_as_text(page, signed_in, shot, api, token_a):
    name = "<img src=x onerror=alert(1)>"
    campaign_id = api(token_a).campaign(name, phones("+3069843090", 1))
    dialogs = []

    def record(dialog):
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", record)
    signed_in(page, "a@shop.test")

    # the filter offers every status
    options = page.get_by_label("Status", exact=True).locator("option").all_inner_texts()
    assert {o.strip().lower() for o in options} == {"all", *STATUSES}, options

    page.get_by_label("Search", exact=True).fill(name)
    button(page, "Filter").click()
    row = page.locator(f'tr[data-campaign-id="{campaign_id}"]')
    expect(row.get_by_role("link", name=name, exact=True)).to_be_visible()
    expect(page.locator("img[src=x]")).to_have_count(0)
    shot(page, "markup-list")

    row.get_by_role("link", name=name, exact=True).click()
    expect(page).to_have_url(re.compile(rf"/app/campaigns/{campaign_id}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(name)
    expect(page.locator("img[src=x]")).to_have_count(0)
    expect(status(page)).to_have_text("draft")
    shot(page, "markup-detail")
    assert dialogs == [], f"the name ran as script: {dialogs}"


# ---------------------------------------------------------------------------------------------
# Accessibility


def test_pages_have_no_serious_accessibility_violations_and_send_is_reachable_by_keyboard(
    page, signed_in, shot, axe, api, token_a
):
    name = unique("Accessible")
    campaign_id = api(token_a).campaign(name, phones("+3069843091", 2))
    found = {}

    page.goto("/app/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    found["sign-in"] = axe(page)

    signed_in(page, "a@shop.test")
    found["campaigns"] = axe(page)
    shot(page, "a11y-campaigns")

    open_campaign(page, campaign_id, name)
    expect(status(page)).to_have_text("draft")
    found["detail"] = axe(page)

    page.goto("/app/campaigns/new")
    expect(page.get_by_label("Name", exact=True)).to_be_visible()
    found["compose"] = axe(page)
    shot(page, "a11y-compose")

    page.goto("/app/contacts")
    expect(page.get_by_label("CSV file")).to_be_attached()
    found["contacts"] = axe(page)
    shot(page, "a11y-contacts")

    page.goto("/app/account")
    expect(page.get_by_test_id("balance")).to_be_visible()
    found["account"] = axe(page)
    shot(page, "a11y-account")

    report = "\n".join(
        f"{where}:\n{violations}" for where, violations in found.items() if violations
    )
    assert not report, f"serious/critical accessibility violations:\n{report}"

    # keyboard only: Tab from the top of the detail page until "Send now" has focus
    open_campaign(page, campaign_id, name)
    send = button(page, "Send now")
    expect(send).to_be_enabled()
    for _ in range(80):
        page.keyboard.press("Tab")
        if send.evaluate("element => element === document.activeElement"):
            break
    expect(send).to_be_focused()
    shot(page, "a11y-keyboard")


def test_the_list_follows_an_active_campaign_without_a_reload(page, signed_in, shot, api, token_a):
    name = unique("Live row")
    client = api(token_a)
    campaign_id = client.campaign(name, phones("+3069843060", 80))
    client.enqueue(campaign_id)
    client.post(f"/api/v1/campaigns/{campaign_id}/pause")
    signed_in(page, "a@shop.test")
    page.goto("/app/campaigns")
    row = page.locator(f'tr[data-campaign-id="{campaign_id}"]')
    expect(row.locator(".badge")).to_have_text("paused")
    page.evaluate("window.__noReload = 1")

    client.post(f"/api/v1/campaigns/{campaign_id}/resume")
    expect(row.locator(".badge")).to_have_text("completed", timeout=SEND_TIMEOUT)
    expect(row.locator('[data-col="sent"]')).to_have_text("80", timeout=SEND_TIMEOUT)
    expect(row.locator('[data-col="progress"]')).to_have_text("100%")
    assert page.evaluate("window.__noReload") == 1, "the page was reloaded"
    shot(page, "list-live")


def test_the_pages_fit_a_phone_screen(page, signed_in, shot, api, token_a):
    name = unique("Phone")
    campaign_id = api(token_a).campaign(name, phones("+3069843093", 2))
    page.set_viewport_size({"width": 390, "height": 844})
    signed_in(page, "a@shop.test")
    for path, label in (
        ("/app/campaigns", "phone-campaigns"),
        (f"/app/campaigns/{campaign_id}", "phone-detail"),
        ("/app/campaigns/new", "phone-compose"),
        ("/app/contacts", "phone-contacts"),
        ("/app/account", "phone-account"),
    ):
        page.goto(path)
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        # nothing wider than the screen: no sideways scrolling of the page itself
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        shot(page, label)
        assert overflow <= 0, f"{path} is {overflow}px wider than a phone screen"
    expect(button(page, "Sign out")).to_be_visible()
