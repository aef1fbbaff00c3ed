"""Server-rendered pages over data from a real OpenBao run (HTTP only; the browser tests drive JS)."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import msgspec
import pytest

from alerts.store import AlertQuery, OutboxEntry, Store
from detect.alert import SEVERITIES, Alert
from tests.ui.conftest import PASSWORDS, LiveServer, Seed
from vaultwatch.api.ui import activity, alert_matches, heatmap, queue_query

pytestmark = pytest.mark.integration

# Values the demo traffic wrote into OpenBao or used as credentials: none may reach a page.
CANARIES = (
    "demo-jwt-key-v",
    "demo-api-keys-v1",
    "demo-db-v1",
    "alice-demo-pw",
    "guess-",
    "vaultwatch-dev-root",
)


@pytest.fixture
def client(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, timeout=30) as c:
        yield c


def login(client: httpx.Client, user: str = "ana") -> str:
    resp = client.post(
        "/api/v1/auth/login",
        data={"username": user, "password": PASSWORDS[user], "next": "/ui/alerts"},
        follow_redirects=False,
    )
    assert resp.status_code == 303, resp.text
    csrf = client.cookies.get("vw_csrf")
    assert csrf
    return csrf


def explained(seed: Seed) -> Alert:
    with_reasons = [a for a in seed.alerts if a.explanation and a.event_ids]
    return max(with_reasons or seed.alerts, key=lambda a: (len(a.explanation), a.score))


def test_anonymous_pages_redirect_to_login_and_login_lands_on_the_queue(client: httpx.Client) -> None:
    resp = client.get("/ui/alerts?severity=high", follow_redirects=False)
    assert resp.status_code == 303
    assert resp.headers["location"].startswith("/ui/login?next=")
    page = client.get(resp.headers["location"])
    assert page.status_code == 200
    assert 'action="/api/v1/auth/login"' in page.text
    assert 'name="next" value="/ui/alerts?severity=high"' in page.text
    assert '<label for="password">' in page.text
    bad = client.post(
        "/api/v1/auth/login",
        data={"username": "ana", "password": "wrong-password", "next": "/ui/alerts"},
        follow_redirects=True,
    )
    assert "Wrong username or password." in bad.text
    login(client)
    queue = client.get("/ui/alerts")
    assert queue.status_code == 200
    assert "<main" in queue.text and 'aria-label="Main"' in queue.text


def test_queue_lists_the_seeded_alerts_with_severity_and_filters_in_the_url(
    client: httpx.Client, ui_seed: Seed
) -> None:
    csrf = login(client)
    page = client.get("/ui/alerts?status=any").text
    assert f'<meta name="csrf-token" content="{csrf}">' in page
    # Rows, and the members of a folded "initial configuration" group.
    shown = set(re.findall(r'data-(?:alert|member)-id="([^"]+)"', page))
    assert shown == {a.id for a in ui_seed.alerts[:50]} | shown  # every row is a seeded alert
    assert shown <= {a.id for a in ui_seed.alerts}
    assert len(shown) == min(50, len(ui_seed.alerts))
    for a in ui_seed.alerts:
        if a.id in shown:
            assert f'class="sev sev-{a.severity}"' in page
    target = max(ui_seed.alerts, key=lambda a: a.score)
    only = client.get(f"/ui/alerts?status=any&severity={target.severity}&detector={target.detector}").text
    ids = set(re.findall(r'data-alert-id="([^"]+)"', only))
    assert target.id in ids
    assert all(
        a.severity == target.severity and a.detector == target.detector for a in ui_seed.alerts if a.id in ids
    )
    assert f'<option value="{target.severity}" selected>' in only
    assert f'value="{target.detector}"' in only
    none = client.get("/ui/alerts?status=any&q=no-such-path-anywhere").text
    assert "data-alert-id=" not in none and "No alerts match these filters." in none


def test_alert_page_shows_actual_vs_typical_timeline_and_raw_entries(
    client: httpx.Client, ui_seed: Seed
) -> None:
    login(client)
    a = explained(ui_seed)
    page = html.unescape(client.get(f"/ui/alerts/{a.id}").text)
    assert a.title in page
    if a.explanation:
        assert "Actual (observed)" in page and "Typical (baseline)" in page
        assert a.explanation[0].feature in page
    # The timeline comes from the archive: the identity's events around the alert, its own highlighted.
    assert page.count('<tr class="in-alert">') >= 1
    assert '<svg class="timeline"' in page
    raw = re.findall(r'<details class="raw-entry"><summary', page)
    assert len(raw) >= 1
    assert f'"request_id": "{a.event_ids[0]}"' in page or any(
        f'"request_id": "{e}"' in page for e in a.event_ids
    )
    for canary in CANARIES:
        assert canary not in page
    missing = client.get("/ui/alerts/va_does_not_exist")
    assert missing.status_code == 404 and "No such alert" in missing.text


def test_triage_needs_csrf_and_the_analyst_role(client: httpx.Client, store: Store, ui_seed: Seed) -> None:
    a = ui_seed.alerts[0]
    csrf = login(client)
    refused = client.post(f"/ui/alerts/{a.id}/status", data={"to": "acknowledged"}, follow_redirects=False)
    assert refused.status_code == 403
    assert store.get_alert(a.id).alert.status == "open"
    ok = client.post(
        f"/ui/alerts/{a.id}/status",
        data={"to": "acknowledged", "comment": "looking"},
        headers={"X-CSRF-Token": csrf, "Accept": "application/json"},
    )
    assert ok.status_code == 200 and ok.json() == {"id": a.id, "status": "acknowledged"}
    detail = store.get_alert(a.id)
    assert detail.alert.status == "acknowledged"
    assert detail.history[-1].actor == "ana" and detail.history[-1].comment == "looking"
    again = client.post(
        f"/ui/alerts/{a.id}/status", data={"to": "acknowledged", "csrf_token": csrf}, follow_redirects=False
    )
    assert again.status_code == 409
    verdict = client.post(
        f"/ui/alerts/{a.id}/verdict",
        data={"verdict": "false_positive", "comment": "a known job", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert verdict.status_code == 303 and verdict.headers["location"].endswith("?done=verdict")
    detail = store.get_alert(a.id)
    assert detail.verdicts[-1].verdict == "false_positive" and detail.verdicts[-1].comment == "a known job"
    assert detail.alert.status == "false_positive"
    with httpx.Client(base_url=str(client.base_url), timeout=30) as viewer:
        vcsrf = login(viewer, "vic")
        assert viewer.get(f"/ui/alerts/{a.id}").status_code == 200
        denied = viewer.post(f"/ui/alerts/{a.id}/status", data={"to": "open", "csrf_token": vcsrf})
        assert denied.status_code == 403
        assert "Record verdict" not in viewer.get(f"/ui/alerts/{a.id}").text
    assert store.get_alert(a.id).alert.status == "false_positive"


def test_silence_from_the_alert_page_and_expire_it(client: httpx.Client, store: Store, ui_seed: Seed) -> None:
    csrf = login(client)
    a = explained(ui_seed)
    resp = client.post(
        f"/ui/alerts/{a.id}/silence",
        data={"hours": "1", "comment": "tuning", "csrf_token": csrf},
        follow_redirects=True,
    )
    assert resp.status_code == 200 and "Silence created" in resp.text
    [silence] = store.list_silences()
    assert {(m.name, m.op, m.value) for m in silence.matchers} == {
        ("identity", "=", a.identity.key),
        ("detector", "=", a.detector),
    }
    assert silence.created_by == "ana" and 3590 < silence.ends_at - silence.starts_at <= 3600
    assert store.is_silenced(a, time.time())
    page = client.get("/ui/silences").text
    assert f'data-silence-id="{silence.id}"' in page and "active" in page
    client.post(f"/ui/silences/{silence.id}/expire", data={"csrf_token": csrf})
    assert store.list_silences()[0].expired
    assert "expired" in client.get("/ui/silences").text
    made = client.post(
        "/ui/silences",
        data={
            "matchers": "severity=~high|critical\ndetector!=root-token-use\n",
            "hours": "24",
            "csrf_token": csrf,
        },
        follow_redirects=True,
    )
    assert made.status_code == 200 and "Silence created." in made.text
    newest = store.list_silences()[0]
    assert [str(m) for m in newest.matchers] == ["severity=~high|critical", "detector!=root-token-use"]
    bad = client.post("/ui/silences", data={"matchers": "severity=~(unclosed", "csrf_token": csrf})
    assert bad.status_code == 422 and "invalid regular expression" in bad.text
    assert len(store.list_silences()) == 2


def test_identity_page_draws_the_hour_of_week_heatmap(client: httpx.Client, ui_seed: Seed) -> None:
    login(client)
    a = explained(ui_seed)
    key = a.identity.key
    summary = ui_seed.engine.identity_summary(key)
    assert summary, "the alert's identity has no baseline"
    page = client.get(f"/ui/identities/{quote(key, safe=':/')}").text  # keys may hold '#'

    cells = re.findall(r'<rect class="cell" data-value="([0-9.]+)"[^>]* fill="(#[0-9a-f]{6})"', page)
    assert len(cells) == 168
    assert any(float(v) > 0 and fill != "#eef1f5" for v, fill in cells)
    assert f'href="/ui/alerts/{a.id}"' in page
    # The offboarding action: the identity's rotation list as a page, keyed like this one.
    link = f"/ui/exposure/identity?identity={quote(key, safe='')}"
    assert f'href="{link}"' in page
    offboarding = client.get(link)
    assert offboarding.status_code == 200 and 'id="rotation-list"' in offboarding.text
    assert key in offboarding.text
    for value, _count in summary["addresses"][:1]:
        assert value in page
    bars = [int(n) for n in re.findall(r'<rect class="bar" data-count="(\d+)"', page)]
    assert len(bars) == 48
    assert sum(bars) == len({e.request_id for e in ui_seed.events if e.identity.key == key})
    listing = client.get("/ui/identities").text
    assert key in listing
    unknown = client.get("/ui/identities/entity:nobody")
    assert unknown.status_code == 200 and "No baseline for this identity yet" in unknown.text


def test_live_row_fragment_follows_the_page_filters(client: httpx.Client, ui_seed: Seed) -> None:
    login(client)
    a = ui_seed.alerts[0]
    row = client.get(f"/ui/alerts/{a.id}/row?status=open")
    assert row.status_code == 200 and f'data-alert-id="{a.id}"' in row.text
    other = next(s for s in SEVERITIES if s != a.severity)
    assert client.get(f"/ui/alerts/{a.id}/row?severity={other}").status_code == 204
    assert client.get("/ui/alerts/va_nope/row").status_code == 204


def test_channels_page_shows_deliveries_and_failures(
    client: httpx.Client, store: Store, ui_seed: Seed
) -> None:
    login(client)
    denied = client.get("/ui/channels")
    assert denied.status_code == 403 and "Admins only" in denied.text
    assert 'href="/ui/channels"' not in client.get("/ui/silences").text
    client.cookies.clear()
    login(client, "adm")
    assert 'href="/ui/channels"' in client.get("/ui/silences").text
    payload = {"group_key": "g", "status": "firing", "alerts": [ui_seed.alerts[0].to_dict()]}
    store.enqueue(
        [
            OutboxEntry(
                receiver="soc", channel="webhook", endpoint="soc/0", message_id="m1", payload=payload
            ),
            OutboxEntry(
                receiver="soc", channel="webhook", endpoint="soc/0", message_id="m2", payload=payload
            ),
            OutboxEntry(
                receiver="oncall", channel="slack", endpoint="oncall/0", message_id="m3", payload=payload
            ),
        ]
    )
    items = {i.message_id: i for i in store.outbox_items()}
    store.mark_delivered(items["m1"].id, time.time())
    store.mark_failed(items["m3"].id, time.time(), "HTTP 500 from receiver after 5 attempts")
    page = client.get("/ui/channels").text
    assert "soc/0" in page and "oncall/0" in page
    assert "HTTP 500 from receiver after 5 attempts" in page
    assert re.search(r'<td class="outcome-error">failed</td>', page)


def test_queue_renders_quickly_with_10k_alerts(client: httpx.Client, store: Store, ui_seed: Seed) -> None:
    base = ui_seed.alerts
    now = time.time()
    many = []
    for i in range(10_000):
        src = base[i % len(base)]
        seen = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - i * 37))
        many.append(
            msgspec.structs.replace(
                src,
                id=f"va_bulk{i:06d}",
                severity=SEVERITIES[i % 5],
                status=("open", "acknowledged", "resolved")[i % 3],
                first_seen=seen,
                last_seen=seen,
                dedup_key=f"{src.dedup_key}/{i}",
            )
        )
    store.add_alerts(many)
    login(client)
    client.get("/ui/alerts")  # warm the template cache and the connection pool
    timings, queries = [], []
    for url in (
        "/ui/alerts",
        "/ui/alerts?severity=critical&severity=high",
        "/ui/alerts?status=any&q=pxl-core",
    ):
        started = time.perf_counter()
        resp = client.get(url)
        timings.append(time.perf_counter() - started)
        assert resp.status_code == 200 and resp.text.count("data-alert-id=") == 50
        found = re.search(r"fetched in (\d+) ms", resp.text)
        assert found is not None
        queries.append(found.group(1))
    total = store.list_alerts(AlertQuery(status=("open", "acknowledged"), limit=1)).total
    assert f'<strong id="queue-total">{total}</strong>' in client.get("/ui/alerts").text
    nxt = re.search(r'href="(/ui/alerts\?[^"]*cursor=[^"]+)"', client.get("/ui/alerts").text)
    assert nxt is not None
    second = client.get(nxt.group(1).replace("&amp;", "&")).text
    assert second.count("data-alert-id=") == 50
    print(
        f"\nqueue render with {total} matching of 10k+ alerts: "
        + ", ".join(f"{t * 1000:.0f} ms" for t in timings)
        + f" over HTTP; store query {', '.join(queries)} ms"
    )
    assert max(timings) < 3.0


def test_queue_query_and_matching_are_the_store_semantics(ui_seed: Seed) -> None:
    q = queue_query(
        {
            "status": ["open,acknowledged", "bogus"],
            "severity": ["high", "nope"],
            "detector": ["a,b"],
            "q": [" x "],
        }
    )
    assert q.status == ("open", "acknowledged") and q.severity == ("high",) and q.detector == ("a", "b")
    assert q.text == "x"
    assert queue_query({}).status == ("open", "acknowledged")
    assert queue_query({"status": ["any"]}).status == ()
    a = ui_seed.alerts[0]
    assert alert_matches(a, queue_query({"status": ["any"]}))
    assert alert_matches(a, queue_query({"identity": [a.identity.key]}))
    assert not alert_matches(a, queue_query({"identity": ["entity:other"]}))
    assert alert_matches(a, queue_query({"q": [a.title[:6].upper()]}))


def test_heatmap_grid() -> None:
    values = [0.0] * 168
    values[24 * 2 + 14] = 9.0  # Wednesday 14:00
    values[3] = 1.0
    grid = heatmap(values)
    assert len(grid["rows"]) == 7 and all(len(r["cells"]) == 24 for r in grid["rows"])
    assert grid["peak_label"] == "Wed 14:00"
    assert grid["rows"][2]["cells"][14]["fill"] == "#0b57d0"
    assert grid["rows"][0]["cells"][3]["fill"] not in ("#eef1f5", "#0b57d0")
    assert grid["rows"][6]["cells"][23]["fill"] == "#eef1f5"
    assert heatmap([])["peak_label"] == "no activity learned"


def test_attacker_controlled_text_is_escaped(client: httpx.Client, store: Store, ui_seed: Seed) -> None:
    src = ui_seed.alerts[0]
    evil = "<img src=x onerror=alert(1)>"
    alert = msgspec.structs.replace(
        src,
        id="va_escape000000000000000000000001",
        title=f"read {evil}",
        paths=(f"logos/data/{evil}",),
        dedup_key=f"{src.dedup_key}/escape",
    )
    store.add_alerts([alert])
    login(client)
    for url in ("/ui/alerts?status=any", f"/ui/alerts/{alert.id}", f"/ui/alerts/{alert.id}/row?status=any"):
        text = client.get(url).text
        assert evil not in text
        assert "&lt;img src=x onerror=alert(1)&gt;" in text


def test_activity_bars() -> None:
    end = 1_800_000_000.0 + 1800  # half past an hour: the chart ends at the next whole hour
    stamps = [end - 10, end - 20, end - 3600 * 5, end - 3600 * 60]
    chart = activity(stamps, end, hours=48)
    assert len(chart["bars"]) == 48 and chart["total"] == 3 and chart["peak"] == 2
    assert chart["bars"][-1]["count"] == 2 and chart["bars"][-1]["h"] == 60
    assert chart["bars"][-6]["count"] == 1 and 0 < chart["bars"][-6]["h"] < 60
    assert activity([], end)["peak"] == 0
