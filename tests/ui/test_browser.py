"""The web UI in a real browser: Debian's Chromium driven by Playwright against a live uvicorn.

CI installs the ``chromium`` package; without ``/usr/bin/chromium`` these tests skip. Screenshots
go to ``test-artifacts/`` at the repository root (not tracked), the README's screenshots included;
``VAULTWATCH_UPDATE_DOCS=1`` writes those to ``docs/`` instead, to refresh them::

    VAULTWATCH_UPDATE_DOCS=1 .venv/bin/python -m pytest tests/ui/test_browser.py
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from alerts.store import Store
from detect.alert import Alert, severity_rank
from tests.ui.conftest import PASSWORDS, LiveServer, Seed
from vaultwatch.cli.demo import BEHAVIOUR_DETECTORS
from vaultwatch.demo.stack import DemoTraffic
from vaultwatch.demo.traffic import traffic_server
from vaultwatch.service.archive import EventArchive
from vaultwatch.service.cross import Pipeline
from vaultwatch.service.replay import read_events, run_engine

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
#: The README's screenshots: rewritten only when asked (they are tracked files).
DOCS = ROOT / "docs" if os.environ.get("VAULTWATCH_UPDATE_DOCS") == "1" else ARTIFACTS / "docs"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]

sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=BROWSER_ARGS,
        )
        try:
            yield b
        finally:
            b.close()


def _page(browser: Any, server: LiveServer) -> Iterator[Any]:
    context = browser.new_context(base_url=server.url, viewport={"width": 1366, "height": 860})
    context.set_default_timeout(15_000)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    # Close the page first: its EventSource must not hold the server open at shutdown.
    context.close()
    assert not errors, f"JavaScript errors: {errors}"


@pytest.fixture
def page(browser: Any, live_server: LiveServer) -> Iterator[Any]:
    yield from _page(browser, live_server)


def shot(pg: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"ui-{name}.png"), full_page=True)


def doc_shot(pg: Any, name: str) -> Path:
    """A README screenshot: ``test-artifacts/docs/`` unless ``VAULTWATCH_UPDATE_DOCS=1`` (``docs/``)."""
    DOCS.mkdir(parents=True, exist_ok=True)
    path = DOCS / name
    pg.screenshot(path=str(path), full_page=False)
    return path


def sign_in(pg: Any, user: str = "ana", start: str = "/ui/alerts") -> None:
    pg.goto(start)
    pg.wait_for_url("**/ui/login?**")
    pg.get_by_label("Username").fill(user)
    pg.get_by_label("Password").fill(PASSWORDS[user])
    pg.get_by_role("button", name="Sign in").click()
    pg.wait_for_url(f"**{start}*")


def test_login_then_a_new_alert_arrives_live(page: Any, store: Store, ui_seed: Seed) -> None:
    sign_in(page)
    # One row per alert, except each identity's initial configuration, folded into one group row.
    rows = page.locator("#queue-body tr[data-alert-id]").count()
    members = page.locator("#queue-body tr.group-row a[data-member-id]").count()
    assert rows + members == min(50, len(ui_seed.alerts))
    page.wait_for_selector("#live-dot.on")  # the EventSource is connected
    before = int(page.inner_text("#queue-total"))
    src = max(ui_seed.alerts, key=lambda a: a.score)
    fresh: Alert = msgspec.structs.replace(
        src,
        id="va_live0000000000000000000000000001",
        title=f"{src.title} (live)",
        severity="critical",
        status="open",
        dedup_key=f"{src.dedup_key}/live",
        last_seen=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    store.add_alerts([fresh])
    row = page.locator(f'#queue-body tr[data-alert-id="{fresh.id}"]')
    row.wait_for()  # no reload: it came through the SSE stream
    assert "(live)" in row.inner_text()
    assert row.locator(".sev-critical").count() == 1
    assert int(page.inner_text("#queue-total")) == before + 1
    assert page.locator("#queue-body tr").first.get_attribute("data-alert-id") == fresh.id
    shot(page, "queue-live")
    # Closed by someone else: the row no longer matches the default filter but shows its new status.
    store.transition(fresh.id, "resolved", "bob", "handled")
    row.locator(".status-resolved").wait_for()


def test_keyboard_triage_changes_the_store(page: Any, store: Store, ui_seed: Seed) -> None:
    sign_in(page)
    page.wait_for_selector("#live-dot.on")
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("k")
    selected = page.locator("#queue-body tr.selected")
    assert selected.count() == 1
    first_id = page.locator("#queue-body tr").first.get_attribute("data-alert-id")
    assert selected.get_attribute("data-alert-id") == first_id
    page.keyboard.press("j")
    target = selected.get_attribute("data-alert-id")
    assert target != first_id
    page.keyboard.press("a")
    page.locator(f'#queue-body tr[data-alert-id="{target}"] .status-acknowledged').wait_for()
    assert store.get_alert(target).alert.status == "acknowledged"
    assert page.locator("#live-status").inner_text().endswith("acknowledged")
    # f asks why, then closes it as a false positive with that comment.
    page.once("dialog", lambda d: d.accept("backup job, expected"))
    page.keyboard.press("f")
    page.locator(f'#queue-body tr[data-alert-id="{target}"] .status-false_positive').wait_for()
    detail = store.get_alert(target)
    assert detail.alert.status == "false_positive"
    assert detail.history[-1].comment == "backup job, expected" and detail.history[-1].actor == "ana"
    shot(page, "queue-triage")
    page.keyboard.press("j")
    other = page.locator("#queue-body tr.selected").get_attribute("data-alert-id")
    assert other != target
    page.keyboard.press("r")
    page.locator(f'#queue-body tr[data-alert-id="{other}"] .status-resolved').wait_for()
    assert store.get_alert(other).alert.status == "resolved"
    page.keyboard.press("k")
    page.locator("#queue-body tr.selected").wait_for()
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/ui/alerts/{target}")
    assert page.locator("#alert-status").inner_text() == "false positive"


def test_silence_from_the_alert_page(page: Any, store: Store, ui_seed: Seed) -> None:
    a = max(
        (x for x in ui_seed.alerts if x.explanation),
        key=lambda x: len(x.explanation),
        default=ui_seed.alerts[0],
    )
    sign_in(page, start=f"/ui/alerts/{a.id}")
    assert page.get_by_role("heading", name="Why: actual vs typical").is_visible()
    assert page.locator("table.events tr.in-alert").count() >= 1
    summary = page.locator("details summary").first
    summary.click()
    assert page.locator("details[open] pre").first.is_visible()
    shot(page, "alert")
    page.locator("#silence-for").select_option("168")
    page.locator("#silence-button").click()
    page.wait_for_url("**done=silenced")
    assert "Silence created" in page.inner_text("main")
    [silence] = store.list_silences()
    assert {(m.name, m.value) for m in silence.matchers} == {
        ("identity", a.identity.key),
        ("detector", a.detector),
    }
    assert abs(silence.ends_at - silence.starts_at - 168 * 3600) < 1
    page.get_by_role("link", name="Silences").click()
    assert page.locator(f'tr[data-silence-id="{silence.id}"]').inner_text().count("active") == 1


def test_identity_heatmap_renders(page: Any, ui_seed: Seed) -> None:
    a = max(ui_seed.alerts, key=lambda x: ui_seed.engine.identity_summary(x.identity.key).get("events", 0))
    sign_in(page, start="/ui/identities")
    page.locator("tr", has_text=a.identity.key).locator("a.identity-name").first.click()
    heat = page.locator("svg#heatmap")
    heat.wait_for()
    box = heat.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 80
    cells = heat.locator("rect.cell")
    assert cells.count() == 168
    fills = cells.evaluate_all("els => els.map(e => getComputedStyle(e).fill)")
    lit = [f for f in fills if f not in ("rgb(238, 241, 245)",)]
    assert lit, "no hour of the week is coloured"
    assert len(set(fills)) >= 2
    heights = page.locator("svg#activity rect.bar").evaluate_all(
        "els => els.map(e => e.getBoundingClientRect().height)"
    )
    assert len(heights) == 48 and max(heights) > 20
    shot(page, "identity")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/ui/login")
    page.goto("/ui/alerts")
    page.wait_for_url("**/ui/login?**")  # the session is gone


UNLABELLED = """() => Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea'))
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.getAttribute('aria-labelledby'))
  .map(e => e.outerHTML)"""


def test_pages_have_landmarks_labels_and_visible_focus(page: Any, ui_seed: Seed) -> None:
    a = ui_seed.alerts[0]
    sign_in(page)
    for url in ("/ui/alerts", f"/ui/alerts/{a.id}", "/ui/silences", f"/ui/identities/{a.identity.key}"):
        page.goto(url)
        assert page.locator("main#main").count() == 1
        assert page.locator("header[role=banner] nav[aria-label=Main]").count() == 1
        assert page.evaluate(UNLABELLED) == [], url
        assert page.locator("h1").count() == 1
    page.goto("/ui/alerts")
    page.keyboard.press("Tab")  # the skip link comes first and shows itself with a focus ring
    focused = page.evaluate(
        "() => { const e = document.activeElement; const s = getComputedStyle(e);"
        " return [e.textContent, s.outlineStyle, e.getBoundingClientRect().left]; }"
    )
    assert focused[0] == "Skip to content" and focused[1] == "solid" and focused[2] >= 0


def test_queue_puts_the_worst_first_and_folds_setup(page: Any, ui_seed: Seed) -> None:
    sign_in(page)
    ids = page.locator("#queue-body tr[data-alert-id]").evaluate_all(
        "rows => rows.map(r => r.getAttribute('data-alert-id'))"
    )
    by_id = {a.id: a for a in ui_seed.alerts}
    ranks = [(severity_rank(by_id[i].severity), by_id[i].score) for i in ids]
    assert ranks == sorted(ranks, reverse=True)
    assert page.locator("#queue-summary .tally").count() == 5
    doc_shot(page, "queue.png")
    group = page.locator("tr.group-row details.group-members")
    if group.count():
        group.first.locator("summary").click()
        assert group.first.locator("a[data-member-id]").first.is_visible()


def test_alert_page_collapses_raw_entries(page: Any, ui_seed: Seed) -> None:
    big = max(ui_seed.alerts, key=lambda a: len(a.event_ids))
    sign_in(page, start=f"/ui/alerts/{big.id}")
    entries = page.locator("#raw-entries details.raw-entry")
    shown = entries.count()
    assert 0 < shown <= 20
    assert page.locator("#raw-gap").is_visible()
    assert page.locator("#todo").is_visible()
    height = page.evaluate("document.body.scrollHeight")
    assert height < 3000, f"the alert page is {height}px tall"
    doc_shot(page, "alert.png")
    page.get_by_role("link", name="Show all").click()
    page.wait_for_url("**raw=all**")
    assert page.locator("#raw-entries details.raw-entry").count() > shown


def test_identities_are_named_in_the_browser(page: Any, ui_seed: Seed) -> None:
    sign_in(page, start="/ui/identities")
    names = page.locator("a.identity-name").all_inner_texts()
    assert "alice" in names
    assert not any(n.startswith(("entity:", "anon:")) for n in names)
    page.get_by_role("link", name="alice", exact=True).first.click()
    page.wait_for_url("**/ui/identities/**")
    assert page.locator("#identity-name").inner_text().startswith("alice")
    assert page.locator("#identity-key").inner_text().startswith("entity:")


# -- the demo's behaviour alerts -----------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_history(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Any], list[Alert]]:
    """The demo's past, as ``vaultwatch demo`` makes it (:class:`DemoTraffic`: eight days of the
    organisation's work with a slow harvest in it, driven through a real OpenBao and rewritten
    onto the past days), through both detection stages as ``vaultwatch replay`` runs them: its
    events and alerts."""
    work = tmp_path_factory.mktemp("demo-history")
    server, url = traffic_server(work / "openbao")
    with server:
        traffic = DemoTraffic(url, server.root_token, server.audit_log)
        try:
            traffic.play(live_seconds=0.0, attacks=("slow-harvest",))
        finally:
            traffic.close()
    events = list(read_events([traffic.workdir_file("history.log")]))
    run = run_engine(events, Pipeline())
    return events, list(run.alerts.values())


@pytest.fixture
def demo_server(
    tmp_path: Path, users_file: Path, demo_history: tuple[list[Any], list[Alert]]
) -> Iterator[LiveServer]:
    """The UI over the demo history's alerts and archived events."""
    from vaultwatch.api.app import create_app
    from vaultwatch.api.auth import AuthConfig
    from vaultwatch.settings import Settings

    events, alerts = demo_history
    with EventArchive(tmp_path / "archive", writer_id="demo") as archive:
        archive.extend(events)
    st = Store(f"sqlite:///{tmp_path / 'demo.db'}")
    st.migrate()
    st.add_alerts(alerts)
    auth = AuthConfig(users_file=users_file, cookie_secure=False, login_burst=50)
    reader = EventArchive(tmp_path / "archive", writer_id="demoreader")
    srv = LiveServer(create_app(Settings(), auth=auth, store=st, archive=reader)).start()
    yield srv
    srv.stop()
    st.close()


@pytest.fixture
def demo_page(browser: Any, demo_server: LiveServer) -> Iterator[Any]:
    yield from _page(browser, demo_server)


def test_a_behaviour_alert_of_the_demo_shows_its_reasons(
    demo_page: Any, demo_history: tuple[list[Any], list[Alert]]
) -> None:
    """The demo's behaviour detection in the browser: its worst behaviour-only alert (the slow
    harvest's first read of another team's secrets) with every reason, actual against typical,
    and what to do. Its screenshot is the README's behaviour alert."""
    behaviour = [a for a in demo_history[1] if a.detector in BEHAVIOUR_DETECTORS and a.explanation]
    assert behaviour, "the demo's history raised no behaviour alert with reasons"
    a = max(behaviour, key=lambda x: (severity_rank(x.severity), x.score))
    assert severity_rank(a.severity) >= severity_rank("medium")
    sign_in(demo_page, start=f"/ui/alerts/{a.id}")
    assert demo_page.get_by_role("heading", name="Why: actual vs typical").is_visible()
    rows = demo_page.locator("table.reasons tbody tr")
    assert rows.count() == len(a.explanation)
    for i, reason in enumerate(a.explanation):
        row = rows.nth(i)
        assert row.is_visible()
        assert row.locator("td").first.inner_text() == reason.feature
        assert row.locator("td.observed").inner_text() == reason.observed
        assert row.locator("td").nth(2).inner_text() == reason.baseline
    assert demo_page.locator("dd.mono", has_text=a.detector).count() >= 1
    assert demo_page.locator("#todo").is_visible()
    assert demo_page.locator("table.events tr.in-alert").count() >= 1  # its requests, from the archive
    doc_shot(demo_page, "behaviour-alert.png")
