"""``vaultwatch demo``: the embedded default, the whole streaming system on one machine.

It starts a real OpenBao dev server whose socket audit device streams to vaultwatch's listener,
the shipper that produces every entry to a Kafka-protocol broker keyed by identity, the pipeline
worker that detects and stores alerts in SQLite, and the API/UI; then it drives realistic traffic
through the Vault API (services, CI, rotations, people) and, after a warm-up, a few attacks. New
alerts show up in a live table as the worker writes them. See :mod:`vaultwatch.demo.stack`.

``setup_org`` and ``drive_traffic`` are the small hand-written organisation used by benchmarks and
tests that need a real audit log quickly.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

from ..naming import label_identity

HELP = "the embedded default: real OpenBao + traffic, show what vaultwatch sees"
DESCRIPTION = """\
Run the whole streaming system on this machine, with nothing else to set up:

  OpenBao dev server (file + socket audit devices) -> vaultwatch socket listener -> shipper
  -> Kafka-protocol broker (topic keyed by identity) -> pipeline worker (detection)
  -> SQLite alert store -> API and web UI

then give the organisation a past: its setup and --history-days days of ordinary work (runtime
services, CI pipelines, a rotation job, developers and admins) are driven through the Vault API
as fast as OpenBao answers and their audit entries moved onto the past days, so vaultwatch has
learned its baselines before anything live arrives. A slow exfiltration (one new secret an hour
through an over-broad grant) hides in that history. Then live traffic runs on the real clock, in
the organisation's night, with attacks one by one: a developer's first read of a production
runtime secret and a stolen CI credential used from a new address (caught by behaviour), a
password brute force and use of the root token (caught by rules). Alerts appear in a live table
as they are stored, with their reason; the UI address is printed at start. At the end each attack
is reported as detected by the alerts whose evidence holds its own requests, no other.

By default the scenario runs to completion, then the stack keeps serving the UI until Ctrl-C.
Ctrl-C or SIGTERM stops every part cleanly. Everything listens on 127.0.0.1 only. Credentials
are random, written to credentials.json (mode 0600) in the work directory, and never printed:
the UI login "demo" (role admin), an API key with role analyst (acknowledge, resolve, annotate)
and one with role viewer (read only), both sent as the X-API-Key header, the OpenBao root token
(passed to OpenBao in its environment, never on a command line) and the organisation's passwords.

examples:
  vaultwatch demo
  vaultwatch demo --exit-after-traffic --json > demo.json
  vaultwatch demo --keep ./demo-out      # keep the server files, audit log, store and archive
"""

log = logging.getLogger(__name__)

#: Detectors that learn what is usual (the rest are deterministic rules).
BEHAVIOUR_DETECTORS = frozenset({"behaviour-risk", "sensitive-first-access"})


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--keep",
        metavar="DIR",
        help="put the server files, audit log, store, archive and credentials.json in DIR and keep them",
    )
    p.add_argument(
        "--history-days",
        type=int,
        default=8,
        help="days of the organisation's past to learn from before the live traffic (default 8; "
        "behaviour detection needs about a week)",
    )
    p.add_argument(
        "--live-seconds",
        type=float,
        default=90.0,
        help="seconds of live traffic, the attacks spread over them (default 90)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the traffic (default 0)")
    p.add_argument("--partitions", type=int, default=1, choices=(1, 3), help="topic partitions (default 1)")
    p.add_argument("--port", type=int, default=None, help="API/UI port (default 8080, else a free one)")
    p.add_argument(
        "--duration",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="stop after this many seconds (default: serve until Ctrl-C)",
    )
    p.add_argument(
        "--exit-after-traffic",
        action="store_true",
        help="stop once the scenario's traffic has gone through the pipeline (for scripts and CI)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the outcome as JSON on stdout (progress goes to stderr); implies "
        "--exit-after-traffic unless --duration is given",
    )


def setup_org(client: Any) -> dict[str, Any]:
    """An org shaped like the seed's LOGOS PXL Core: KV secrets, policies, and identities."""
    client.sys.enable_secrets_engine("kv", path="logos", options={"version": "2"})
    for name in ("jwt-key", "api-keys", "tls", "db"):
        client.secrets.kv.v2.create_or_update_secret(
            path=f"pxl-core/runtime/{name}", secret={"value": f"demo-{name}-v1"}, mount_point="logos"
        )
    for name in ("registry-token", "cosign-key"):
        client.secrets.kv.v2.create_or_update_secret(
            path=f"pxl-core/build/{name}", secret={"value": f"demo-{name}-v1"}, mount_point="logos"
        )
    client.sys.create_or_update_acl_policy(
        "pxl-core-runtime", 'path "logos/data/pxl-core/runtime/*" { capabilities = ["read"] }'
    )
    client.sys.create_or_update_acl_policy(
        "pxl-core-ci", 'path "logos/data/pxl-core/build/*" { capabilities = ["read"] }'
    )
    # Over-broad on purpose: Vault allows developers to read runtime secrets, the seed forbids it.
    client.sys.create_or_update_acl_policy(
        "developer",
        'path "logos/data/*" { capabilities = ["read", "list"] }\n'
        'path "logos/metadata/*" { capabilities = ["list"] }',
    )
    client.sys.enable_auth_method("userpass")
    client.sys.enable_auth_method("approle")
    users = {"alice": "developer", "bob": "developer"}
    for user, policy in users.items():
        client.auth.userpass.create_or_update_user(user, password=f"{user}-demo-pw", policies=[policy])
    client.auth.approle.create_or_update_approle(
        "pxl-core-runtime", token_policies=["pxl-core-runtime"], token_ttl="1h"
    )
    role_id = client.auth.approle.read_role_id("pxl-core-runtime")["data"]["role_id"]
    return {"role_id": role_id, "users": users}


def drive_traffic(srv: Any, org: dict[str, Any], rounds: int) -> None:
    import hvac
    import hvac.exceptions

    root = srv.client()
    runtime_tokens = []
    for _ in range(3):
        secret_id = root.auth.approle.generate_secret_id("pxl-core-runtime")["data"]["secret_id"]
        c = srv.client(token="")
        c.auth.approle.login(role_id=org["role_id"], secret_id=secret_id)
        runtime_tokens.append(c)
    ci_token = root.auth.token.create(policies=["pxl-core-ci"], ttl="15m", display_name="ci-deploy")["auth"][
        "client_token"
    ]
    ci = srv.client(token=ci_token)
    alice = srv.client(token="")
    alice.auth.userpass.login("alice", "alice-demo-pw")
    for i in range(rounds):
        for c in runtime_tokens:
            for name in ("jwt-key", "api-keys", "db"):
                c.secrets.kv.v2.read_secret_version(
                    f"pxl-core/runtime/{name}", mount_point="logos", raise_on_deleted_version=False
                )
        if i % 5 == 0:
            ci.secrets.kv.v2.read_secret_version(
                "pxl-core/build/registry-token", mount_point="logos", raise_on_deleted_version=False
            )
            root.secrets.kv.v2.create_or_update_secret(
                path="pxl-core/runtime/jwt-key",
                secret={"value": f"demo-jwt-key-v{i + 2}"},
                mount_point="logos",
            )
        alice.secrets.kv.v2.list_secrets("pxl-core/", mount_point="logos")
    # Attacks: a brute force on bob, a developer reading runtime secrets, root token use.
    for attempt in range(8):
        try:
            srv.client(token="").auth.userpass.login("bob", f"guess-{attempt}")
        except (hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden):
            pass  # refused, as it should be
    alice.secrets.kv.v2.read_secret_version(
        "pxl-core/runtime/jwt-key", mount_point="logos", raise_on_deleted_version=False
    )
    try:
        ci.secrets.kv.v2.read_secret_version(
            "pxl-core/runtime/db", mount_point="logos", raise_on_deleted_version=False
        )
    except hvac.exceptions.Forbidden:
        pass
    root.sys.list_enabled_audit_devices()


# -- the streaming demo ---------------------------------------------------------------------------
class _Run:
    """State shared by the traffic thread, the display loop and the signal handlers."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.signalled = 0

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signalled = signum
        self.stop.set()


def _install_signals(state: _Run) -> dict[int, Any]:
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, state.on_signal)
    return previous


@contextmanager
def _servers_ignore_ctrl_c() -> Iterator[None]:
    """Start servers with SIGINT blocked, so that they inherit the blocked mask.

    A terminal's Ctrl-C goes to the whole process group; it is meant for the demo, which then
    stops OpenBao, the pipeline and the broker in order. A broker killed first would leave the
    Kafka clients waiting on it. SIGTERM still reaches the servers. A Ctrl-C pressed meanwhile
    is delivered to the demo when the mask is restored.
    """
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _after_setup(stack: Any, traffic: Any) -> None:
    stack.write_credentials(traffic.passwords)


def _drive(traffic: Any, live_seconds: float, on_setup: Any = None, on_history: Any = None) -> None:
    from ..demo.stack import DemoStopped

    try:
        traffic.play(live_seconds, on_setup=on_setup, on_history=on_history)
    except DemoStopped:
        traffic.progress.phase = "stopped"
    except Exception as exc:  # noqa: BLE001 - shown to the user; the stack keeps serving
        if traffic.stopping:  # the servers were stopped under it
            traffic.progress.phase = "stopped"
            return
        traffic.progress.phase = "failed"
        traffic.progress.error = type(exc).__name__
        log.warning("traffic stopped early: %s", type(exc).__name__)


def reason_of(alert: Any) -> str:
    """The alert's main reason in one line: what was observed against what is usual."""
    if alert.explanation:
        r = alert.explanation[0]
        text = f"{r.feature}: {r.observed}"
        return f"{text} (usual: {r.baseline})" if r.baseline else text
    return str(alert.title)


def _alert_table(alerts: list[Any], limit: int = 20, width: int = 120) -> Any:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    colour = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan", "info": "dim"}
    t = Table(
        title=f"{len(alerts)} alert(s), most recently seen last", title_justify="left", box=box.SIMPLE_HEAD
    )
    # One line per alert, so the newest stay on screen; the reason gives way first, and on a
    # narrow terminal the time and count columns go.
    wide = width >= 110
    cols = {"last seen": 11, "severity": 8, "detector": 22, "identity": 16, "why": 16, "count": 6}
    if not wide:
        cols = {k: v for k, v in cols.items() if k not in ("last seen", "count")}
    fixed = sum(v for k, v in cols.items() if k != "why") + 3 * len(cols)
    for col, w in cols.items():
        if col == "why":
            t.add_column(col, no_wrap=True, overflow="ellipsis", max_width=max(w, width - fixed))
        else:
            t.add_column(col, no_wrap=True, overflow="ellipsis", width=w)
    for a in sorted(alerts, key=lambda x: x.last_seen)[-limit:]:
        sev = f"[{colour.get(a.severity, '')}]{a.severity}[/]"
        who = escape(label_identity(a.identity).name)
        detector = f"[bold]{a.detector}[/bold]" if a.detector in BEHAVIOUR_DETECTORS else a.detector
        row = [sev, detector, who, escape(reason_of(a))]
        when = a.last_seen[5:16].replace("T", " ")  # MM-DD HH:MM: the history's alerts are days old
        t.add_row(*([when, *row, str(a.count)] if wide else row))
    return t


def _status_line(progress: Any, counters: dict[str, int], caught_up: bool) -> Any:
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    grid = Table.grid(padding=(0, 1))
    phase = progress.phase
    if phase in ("waiting", "setup", "history"):
        label = "learning the organisation's past" if phase == "history" else "setting up the organisation"
        grid.add_row(
            label,
            ProgressBar(total=1.0, completed=progress.history_fraction, width=30),
            f"day {progress.sim_days:.1f} of {progress.history_days:.0f} days of history",
        )
    elif phase == "live":
        live = [k for k in progress.attacks_started if k != "slow-harvest"]
        grid.add_row(
            "[bold]live traffic[/bold] (the organisation's night)"
            + (f"; [red]attacks so far:[/red] {', '.join(live)}" if live else "")
        )
    else:
        done = "scenario done" if phase == "done" else f"traffic {phase}"
        grid.add_row(done + ("; pipeline caught up, serving" if caught_up else "; pipeline catching up"))
    grid.add_row(
        f"[dim]{progress.requests} requests; {counters['received']} audit entries received, "
        f"{counters['shipped']} shipped, {counters['consumed']} consumed[/dim]"
    )
    return grid


def run(args: argparse.Namespace) -> int:
    """Start the stack, drive the scenario, show alerts live, shut everything down."""
    from rich.markup import escape

    from ..demo.stack import DemoStack, DemoTraffic, TrafficProgress, port_free
    from .console import console as make_console

    if args.history_days < 0 or args.live_seconds < 0:
        log.error("--history-days and --live-seconds must not be negative")
        return 2
    if args.keep and (Path(args.keep) / "vaultwatch.db").exists():
        # Its store holds the last run's alerts and engine checkpoints, which would shadow this
        # run's (the new broker starts its offsets at zero again).
        log.error("%s holds a previous demo run; give --keep a new directory", args.keep)
        return 2
    if args.port and not port_free("127.0.0.1", args.port):
        log.error("port %d is in use: pass --port with another port, or --port 0 for any free one", args.port)
        return 2
    exit_after = args.exit_after_traffic or (args.json and not args.duration)
    if logging.getLogger().getEffectiveLevel() >= logging.WARNING:
        # kafka-python warns about its own event-loop timing under load, and logs a traceback
        # when a consumer's socket closes under a poll at shutdown (Ctrl-C); vaultwatch reports
        # and retries what matters itself (SourceError). Not the user's concern in the demo.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    out = make_console(stderr=bool(args.json))
    live_ok = out.is_terminal and not args.json
    state = _Run()
    previous = _install_signals(state)
    tmp = None
    if args.keep:
        workdir = Path(args.keep).resolve()
    else:
        tmp = tempfile.TemporaryDirectory(prefix="vaultwatch-demo-", ignore_cleanup_errors=True)
        workdir = Path(tmp.name)
    stack = DemoStack(workdir, partitions=args.partitions, api_port=args.port)
    progress = TrafficProgress()
    traffic: Any = None
    driver: threading.Thread | None = None
    t0 = time.monotonic()
    code = 0
    try:
        try:
            with _servers_ignore_ctrl_c():
                stack.start(step=lambda msg: out.print(f"[dim]-[/dim] {msg}"))
        except Exception as exc:  # noqa: BLE001 - one line, not a traceback
            if state.signalled:
                return 0  # interrupted while starting: the half-started stack is stopped below
            out.print(f"[red]the demo could not start:[/red] {type(exc).__name__}: {escape(str(exc))}")
            return 1
        if state.signalled:
            return 0
        out.print(
            f"[bold]vaultwatch UI and API:[/bold] {stack.ui_url}  "
            f"(alerts as JSON: {stack.ui_url}api/v1/alerts)"
        )
        if stack.login is not None:
            out.print(
                f"log in as [bold]{stack.login.user}[/bold]; password and API key in {stack.credentials_path}"
            )
        out.print(f"OpenBao {stack.traffic_url} streams its audit log to vaultwatch; Ctrl-C stops everything")
        traffic = DemoTraffic(
            stack.traffic_url,
            stack.root_token,
            stack.audit_log,
            history_days=args.history_days,
            seed=args.seed,
            stop=state.stop,
            progress=progress,
        )
        # The organisation's passwords join credentials.json as soon as they exist.
        on_setup = partial(_after_setup, stack, traffic)
        driver = threading.Thread(
            target=_drive, args=(traffic, args.live_seconds, on_setup, stack.feed_history), daemon=True
        )
        driver.start()
        caught_up = _watch(stack, progress, state, out, live_ok, exit_after, args.duration, t0)
        alerts = stack.alerts()
        if traffic is not None:
            stack.write_credentials(traffic.passwords)
        truth = traffic.ground_truth() if traffic is not None else None
        code = _report(args, out, stack, progress, alerts, truth, caught_up, time.monotonic() - t0)
        if state.signalled:
            # Errors of parts cut short by the stop request are expected, not failures.
            out.print("stopped on request; shutting down")
            return 0
        for problem in stack.errors:
            out.print(f"[red]{escape(problem)}[/red]")
        return 1 if stack.errors else code
    finally:
        state.stop.set()
        if driver is not None:
            driver.join(timeout=30)
        if traffic is not None:
            traffic.close()
        stack.stop(drain=False)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if tmp is not None:
            tmp.cleanup()
        elif args.keep:
            out.print(f"files kept in {workdir}")


def _watch(
    stack: Any,
    progress: Any,
    state: _Run,
    out: Any,
    live_ok: bool,
    exit_after: bool,
    duration: float,
    t0: float,
) -> bool:
    """Show progress and alerts until stopped; returns whether the pipeline caught up."""
    from contextlib import nullcontext

    from rich.console import Group
    from rich.live import Live
    from rich.markup import escape

    seen: dict[str, int] = {}
    shown_phase = ""
    caught_up = False
    done_at: float | None = None
    live: Any = Live(console=out, refresh_per_second=4, transient=False) if live_ok else nullcontext()
    with live:
        while not state.stop.is_set():
            alerts = stack.alerts()
            counters = stack.counters()
            finished = progress.phase in ("done", "failed", "stopped")
            if finished:
                done_at = done_at or time.monotonic()
                if not caught_up and stack.drained():
                    caught_up = stack.wait_drained(10.0, state.stop)
            if live_ok:
                rows = max(5, out.size.height - 10)
                table = _alert_table(alerts, rows, out.size.width)
                live.update(Group(_status_line(progress, counters, caught_up), table))
            else:
                if progress.phase != shown_phase:
                    shown_phase = progress.phase
                    out.print(f"[dim]-[/dim] traffic: {shown_phase}")
                for a in alerts:
                    if seen.get(a.id) != a.count:
                        who = escape(label_identity(a.identity).name)
                        out.print(
                            f"ALERT {a.severity:<8} {a.detector:<26} {who:<24} {escape(a.title)}"
                            f" [dim]- {escape(reason_of(a))}[/dim]",
                            soft_wrap=True,  # one line per alert, for whoever reads the log
                        )
            seen.update((a.id, a.count) for a in alerts)
            if duration and time.monotonic() - t0 >= duration:
                break
            if exit_after and done_at is not None and (caught_up or time.monotonic() - done_at > 45):
                break
            state.stop.wait(0.5)
    return caught_up


def _report(
    args: argparse.Namespace,
    out: Any,
    stack: Any,
    progress: Any,
    alerts: list[Any],
    truth: Any,
    caught_up: bool,
    elapsed: float,
) -> int:
    from detect.alert import severity_rank

    from ..demo.scenarios import judge_alerts

    # An attack counts as detected by the alerts that hold its own requests among their
    # evidence, at medium severity or above (as the evaluation judges): not by a detector that
    # fired on someone else's (the setup's own root-token use, say).
    outcomes = judge_alerts(truth, alerts) if truth is not None else {}
    started = [kind for kind in progress.attacks_started if kind in outcomes]
    caught_by = {kind: sorted(outcomes[kind].detectors) for kind in started}
    expected = {kind: outcomes[kind].caught for kind in started}
    evidence = {kind: outcomes[kind].alert_ids for kind in started}
    behaviour = [a for a in alerts if a.detector in BEHAVIOUR_DETECTORS]
    if args.json:
        doc = {
            "ui": stack.ui_url,
            "api": stack.api_kind,
            "traffic": {
                "phase": progress.phase,
                "requests": progress.requests,
                "attacks": progress.attacks_started,
                "error": progress.error,
            },
            "pipeline": {**stack.counters(), "caught_up": caught_up},
            "attacks_detected": expected,
            "attacks_caught_by": caught_by,
            "attack_alerts": evidence,
            "behaviour_alerts": len(behaviour),
            "alerts": [a.to_dict() for a in alerts],
        }
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        sys.stdout.flush()
    else:
        by_id = {a.id: a for a in alerts}
        for kind in started:
            worst: dict[str, Any] = {}  # detector -> its most severe alert on this attack
            for alert in (by_id[i] for i in evidence[kind] if i in by_id):
                best = worst.get(alert.detector)
                if best is None or severity_rank(alert.severity) > severity_rank(best.severity):
                    worst[alert.detector] = alert
            by = ", ".join(f"{d} ({a.severity})" for d, a in sorted(worst.items()))
            if expected[kind]:
                mark = f"[green]detected[/green] by {by}"
            elif by:
                mark = f"[yellow]seen at low severity only[/yellow] by {by}"
            else:
                mark = "[red]missed[/red]"
            out.print(f"attack {kind}: {mark}")
        out.print(f"{len(alerts)} alert(s), {len(behaviour)} from behaviour detection, in {elapsed:.0f}s")
    if progress.phase == "failed":
        out.print(f"[red]the traffic stopped early:[/red] {progress.error}")
        return 1
    return 0
