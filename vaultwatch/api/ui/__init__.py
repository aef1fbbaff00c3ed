"""The analysts' web UI: server-rendered pages over the alert store, the event archive and baselines.

Pages live under ``/ui`` (``/`` redirects to the queue): the alert queue (filters and sort in the
query string, keyset pagination, keyboard triage and live rows through the SSE stream), one
alert (actual vs typical, the identity's timeline from the archive, the entries that made it,
triage, verdict and a one-click silence), identities with their baselines (hour-of-week heatmap,
top paths, addresses, rate, peers, alert history), silences (list, create, expire), exposure
scope (who read secrets under a path; for analysts, every request made with a leaked token,
posted in a form body), the stored audit review reports, and, for admins, channel delivery
status from the store's outbox. The login page posts to ``POST /api/v1/auth/login``. With a
Vault client, ``entity:<id>`` identities show their entity's name next to the id.

Pages authenticate through the JSON API's own dependency (:data:`vaultwatch.api.deps.PagePrincipal`:
session cookie, bearer token, API key or SSO header, with its throttling); an anonymous or
expired caller is sent to the login page. Every form carries the session's CSRF
value and the state-changing routes use the API's ``Analyst`` dependency, which checks it; they
answer JSON to ``Accept: application/json`` (the keyboard triage) and a 303 back to the page
otherwise. The templates are autoescaped Jinja2; ``static/app.js`` is the only script (plain
``fetch`` and ``EventSource``, no build step), and every page works without it.

One module per resource, each with its own ``router``, gathered here into :data:`router`:
:mod:`.login` (``/``, static files, sign-in), :mod:`.alerts` (queue, one alert, triage),
:mod:`.identities`, :mod:`.silences`, :mod:`.exposure`, :mod:`.reports` and :mod:`.channels`;
:mod:`.pages` holds what they share (templates, rendering, the login redirect, audit).
Templates are in ``templates/`` and the stylesheet and script in ``static/`` (package data).
"""

from __future__ import annotations

from fastapi import APIRouter

from . import alerts, channels, exposure, identities, login, reports, silences
from .alerts import alert_matches, queue_query
from .identities import Baselines, activity, heatmap
from .pages import UI_PREFIX

__all__ = ["UI_PREFIX", "Baselines", "activity", "alert_matches", "heatmap", "queue_query", "router"]

#: Every page and form of the web UI (not in the OpenAPI document).
router = APIRouter(include_in_schema=False)
for _module in (login, alerts, identities, silences, channels, exposure, reports):
    router.include_router(_module.router)
