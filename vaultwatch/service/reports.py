"""Reports from the service's settings: the scheduler's entry point and KV metadata ages.

:func:`render_scheduled` renders the last complete daily/weekly/monthly period before ``now``
from the archive and store named in the settings; :func:`metadata_ages` reads the rotation-classed
secrets' KV metadata through ``settings.vault`` for the rotation section.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from detect.policy import AccessPolicy

from ..report.data import ReportOptions, period_for
from ..report.generate import ReportResult, generate_report, load_check
from ..report.notify import enqueue_report
from ..settings import Settings, load_policy
from ..vault.client import VaultClientError
from ..vault.connect import vault_client
from ..vault.rotation import RotationMonitor

__all__ = ["metadata_ages", "render_scheduled"]

log = logging.getLogger(__name__)


def metadata_ages(settings: Settings, policy: AccessPolicy, now: datetime) -> list[Any] | None:
    """KV metadata ages of the policy's rotation-classed secrets through ``settings.vault``.

    None when no Vault is configured or it cannot be read (logged, without any configured value):
    the report then shows the archive's view only.
    """
    if settings.vault is None:
        return None
    try:
        with vault_client(settings, login=False) as vc:  # __enter__ logs in
            return RotationMonitor(vc, policy).scan(now.timestamp())
    except (VaultClientError, OSError) as exc:
        # The report still renders; the reason is logged without any configured value.
        log.warning("KV metadata ages not included: %s", type(exc).__name__)
        return None


def render_scheduled(
    settings: Settings,
    period: str,
    now: datetime,
    *,
    out: str | os.PathLike[str] = "var",
    check_path: str | os.PathLike[str] | None = None,
    options: ReportOptions | None = None,
    notify: Sequence[str] = (),
) -> ReportResult:
    """Render the last complete ``period`` (``daily``/``weekly``/``monthly``) before ``now``.

    Reads the archive and the store named in ``settings`` (and KV metadata when
    ``settings.vault`` is set); call it from a scheduler shortly after each period ends.
    ``notify`` lists outbox endpoint keys (``receiver/kind/index``) to announce the report to,
    with a link under ``settings.api.public_base_url`` (see :func:`enqueue_report`).
    """
    policy = load_policy(settings.detect.policy_file)
    check = load_check(check_path) if check_path else None
    result = generate_report(
        settings.archive.path,
        settings.store.url,
        period_for(period, now),
        out,
        policy=policy,
        check=check,
        metadata_ages=metadata_ages(settings, policy, now),
        options=options,
        now=now,
    )
    if notify:
        enqueue_report(settings.store.url, result, notify, settings.api.public_base_url, now=now)
    return result
