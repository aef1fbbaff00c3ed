"""``vaultwatch quarantine``: list, show, requeue and discard quarantined audit lines.

A thin command line over :mod:`ingest.quarantine`'s admin functions. The quarantine file keeps
each refused line encrypted (Fernet); ``list`` reads only the clear metadata and needs no key,
``show`` and ``requeue`` decrypt with the key file, ``discard`` removes records once requeued.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ingest.quarantine import (
    KEY_FILE_ENV,
    QuarantineError,
    default_key_file,
    discard,
    list_records,
    requeue,
    show_record,
)

from ..service.atomic import atomic_writer

__all__ = ["HELP", "DESCRIPTION", "add_arguments", "run"]

HELP = "list, show, requeue or discard the audit lines a run quarantined (encrypted at rest)"
DESCRIPTION = f"""\
Work on a quarantine file written by `vaultwatch replay --quarantine`, `inspect` or `ship`: the
audit lines that did not parse, each encrypted with the quarantine key. `list` shows the clear
metadata (id, time, source, position, reason, size) and needs no key; `show` decrypts one record;
`requeue` writes the decrypted lines to a file to feed back (after fixing the parser or the line);
`discard` removes records, e.g. once requeued.

The key file is --key-file, else ${KEY_FILE_ENV}, else ~/.config/vaultwatch/quarantine.key
(the file the run that wrote the quarantine used). Ids may be shortened to a unique prefix.

examples:
  vaultwatch quarantine list bad-lines.jsonl
  vaultwatch quarantine list bad-lines.jsonl --json
  vaultwatch quarantine show bad-lines.jsonl 3fa2c1 --key-file /etc/vaultwatch/quarantine.key
  vaultwatch quarantine requeue bad-lines.jsonl --out requeued.log --discard
  vaultwatch replay requeued.log --alerts-out alerts.jsonl
  vaultwatch quarantine discard bad-lines.jsonl 3fa2c1 9b07de
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="the records' metadata (no key needed)")
    ls.add_argument("file", metavar="FILE", help="the quarantine file")
    ls.add_argument("--json", action="store_true", help="one JSON object per record")
    show = sub.add_parser("show", help="one record, decrypted (the line may hold a secret)")
    show.add_argument("file", metavar="FILE", help="the quarantine file")
    show.add_argument("id", metavar="ID", help="the record's id or a unique prefix")
    show.add_argument("--json", action="store_true", help="as one JSON object")
    rq = sub.add_parser("requeue", help="write the decrypted lines to a file, to feed back")
    rq.add_argument("file", metavar="FILE", help="the quarantine file")
    rq.add_argument("ids", nargs="*", metavar="ID", help="records to requeue (default: all)")
    rq.add_argument(
        "--out", required=True, metavar="PATH", help="write the lines here (mode 0600; '-' for stdout)"
    )
    rq.add_argument("--discard", action="store_true", help="remove the records once written")
    dc = sub.add_parser("discard", help="remove records from the file")
    dc.add_argument("file", metavar="FILE", help="the quarantine file")
    dc.add_argument("ids", nargs="+", metavar="ID", help="records to remove")
    for sp in (ls, show, rq, dc):
        sp.add_argument(
            "--key-file",
            metavar="PATH",
            default=os.environ.get(KEY_FILE_ENV) or None,
            help=f"the quarantine key (default: ${KEY_FILE_ENV}, else ~/.config/vaultwatch/quarantine.key)",
        )


def _fail(message: str) -> int:
    print(f"vaultwatch quarantine: {message}", file=sys.stderr)  # noqa: T201
    return 2


def run(args: argparse.Namespace) -> int:
    """Entry point of ``vaultwatch quarantine``."""
    path = Path(args.file)
    if not path.is_file():
        return _fail(f"no quarantine file at {path}: give the --quarantine PATH the run wrote to")
    key_file = Path(args.key_file) if args.key_file else default_key_file()
    if args.action in ("show", "requeue") and not key_file.is_file():
        return _fail(
            f"no quarantine key at {key_file}: pass --key-file (or set ${KEY_FILE_ENV}) to the key "
            "file the run that wrote the quarantine used"
        )
    try:
        return _ACTIONS[args.action](args, path, key_file)
    except QuarantineError as exc:
        hint = ""
        if "decrypt" in str(exc).lower() or "key" in str(exc).lower():
            hint = f" (is {key_file} the key the run that wrote {path} used? pass it with --key-file)"
        return _fail(f"{exc}{hint}")


def _list(args: argparse.Namespace, path: Path, key_file: Path) -> int:
    records = list_records(path)
    if args.json:
        for r in records:
            print(  # noqa: T201
                json.dumps(
                    {
                        "id": r.id,
                        "quarantined_at": r.quarantined_at,
                        "source": r.source,
                        "position": r.position,
                        "reason": r.reason,
                        "size": r.size,
                    }
                )
            )
        return 0
    for r in records:
        print(f"{r.id[:12]}  {r.quarantined_at}  {r.reason:<20} {r.size:>8}  {r.source}:{r.position}")  # noqa: T201
    print(f"{len(records)} record(s) in {path}", file=sys.stderr)  # noqa: T201
    return 0


def _show(args: argparse.Namespace, path: Path, key_file: Path) -> int:
    rec = show_record(path, args.id, key_file=key_file)
    line = rec.line().decode("utf-8", "replace")
    if args.json:
        print(  # noqa: T201
            json.dumps(
                {
                    "id": rec.id,
                    "quarantined_at": rec.quarantined_at,
                    "source": rec.source,
                    "position": rec.position,
                    "reason": rec.reason,
                    "detail": rec.detail,
                    "size": rec.size,
                    "line": line,
                }
            )
        )
        return 0
    for name in ("id", "quarantined_at", "source", "position", "reason", "detail", "size"):
        print(f"{name:<15} {getattr(rec, name)}")  # noqa: T201
    print(f"{'line':<15} {line}")  # noqa: T201
    return 0


def _requeue(args: argparse.Namespace, path: Path, key_file: Path) -> int:
    records = list(requeue(path, args.ids or None, key_file=key_file))
    data = b"".join(r.line().rstrip(b"\n") + b"\n" for r in records)
    if args.out == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        out = Path(args.out)
        with atomic_writer(out) as f:
            os.fchmod(f.fileno(), 0o600)  # the lines may hold secrets
            f.write(data)
    removed = discard(path, [r.id for r in records]) if args.discard and records else 0
    where = "stdout" if args.out == "-" else args.out
    print(  # noqa: T201
        f"{len(records)} line(s) written to {where}"
        + (f"; {removed} record(s) discarded" if removed else ""),
        file=sys.stderr,
    )
    return 0


def _discard(args: argparse.Namespace, path: Path, key_file: Path) -> int:
    removed = discard(path, args.ids)
    print(f"{removed} record(s) discarded from {path}", file=sys.stderr)  # noqa: T201
    return 0


_ACTIONS = {"list": _list, "show": _show, "requeue": _requeue, "discard": _discard}
