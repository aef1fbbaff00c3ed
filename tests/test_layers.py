"""The import layers, checked on the source (AST), so a violation fails here and not in review.

Data flows one way: ``ingest`` → ``detect`` → ``alerts``, and the ``vaultwatch`` shell wires
them. Concretely:

* ``ingest`` imports nothing of ``detect``, ``alerts`` or ``vaultwatch``;
* ``detect`` imports nothing of ``alerts`` or ``vaultwatch``;
* ``alerts`` imports nothing of ``vaultwatch``, and of ``detect`` only the public alert contract,
  ``detect.alert`` (the engine, rules, baselines and errors are ``detect``'s internals);
* the demo (``vaultwatch/demo/``: stack, traffic, servers, scenarios, dataset generation) is
  imported only by the demo itself, by the CLI's ``demo`` verb and by tests. The old flat
  locations of those modules (``vaultwatch.traffic`` and friends) count as demo too, so the rule
  holds before and after the move;
* ``ingest``, ``detect`` and ``alerts`` import at module level only: an import inside a function
  hides a dependency (or an import cycle) from the reader and from this check. A lazily imported
  heavy library is not an exception: these packages need their dependencies to work at all;
* in the shell's ``vaultwatch/vault`` and ``vaultwatch/service`` an import inside a function needs
  a comment saying why, on its line or directly above it (above its group of imports): a heavy or
  optional library that only one command uses, say. Project code is never lazy for no stated
  reason (no import there dodges a cycle). ``vaultwatch/cli`` (one module per verb, imported on
  use) and the demo are not held to this.

A second check, :func:`test_long_modules_say_why`: a module over 600 lines in these packages says
why in its docstring, in a sentence that calls it long ("long", "longer" or "N lines") and gives
the reason ("because", "why", "on purpose", or a colon before it).

Every violation is reported with its file and line. ``KNOWN`` lists violations that exist today
and are being fixed elsewhere; an entry that no longer occurs fails the test too, so the list
only shrinks and never hides a new violation.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ingest", "detect", "alerts", "vaultwatch")
#: Where the demo lives, and where its modules lived before ``vaultwatch/demo/`` existed.
DEMO = (
    "vaultwatch.demo",
    "vaultwatch.traffic",
    "vaultwatch.scenarios",
    "vaultwatch.demo_stack",
    "vaultwatch.servers",
    "vaultwatch.datasets",
)
#: The CLI verb that starts the demo (its module, at either location).
DEMO_VERB = ("vaultwatch.cli.demo", "vaultwatch.commands.demo")
#: Packages whose imports must all be at module level.
MODULE_LEVEL_ONLY = ("ingest", "detect", "alerts")
#: Packages where an import inside a function must carry a comment saying why.
MODULE_LEVEL_UNLESS_EXPLAINED = ("vaultwatch.vault", "vaultwatch.service")
#: Comments that are directives to a tool, not reasons.
_DIRECTIVE = re.compile(r"#\s*(noqa|type:|fmt:|pragma)", re.I)

#: (importing module, imported module or name) -> why it exists today and the change that removes
#: it. Keep it short; never add to it to make a new
#: violation pass.
_KAFKA_LAZY = (
    "kafka-python imported inside import_kafka()/keyed_partitioner() for start-up time and to mute "
    "its DeprecationWarning; to fix: import it at the top of ingest/kafka_config.py (the warning "
    "is already filtered in pytest's config, and is hidden by default outside tests)"
)
_SAY_WHY = (
    "function-level import with no comment saying why; to fix: move it to the top, or comment the reason"
)
KNOWN: dict[tuple[str, str], str] = {
    ("ingest.kafka_config", "kafka"): _KAFKA_LAZY,
    ("ingest.kafka_config", "kafka.errors"): _KAFKA_LAZY,
    ("ingest.kafka_config", "kafka.partitioner.default.DefaultPartitioner"): _KAFKA_LAZY,
    ("ingest.kafka_config", "kafka.partitioner.default.murmur2"): _KAFKA_LAZY,
    # Found when the rule reached vaultwatch/vault and vaultwatch/service (audit gap 15); these
    # modules belong to other changes. Third-party libraries used by one command (hvac,
    # cryptography, jinja2, uvicorn, rich) may stay lazy with a comment; the rest should move up.
    ("vaultwatch.vault.client", "hvac"): _SAY_WHY,
    ("vaultwatch.vault.client", "hvac.exceptions"): _SAY_WHY,
    ("vaultwatch.vault.client", "requests"): _SAY_WHY,
    ("vaultwatch.vault.compliance", "cryptography.hazmat.primitives.serialization"): _SAY_WHY,
    ("vaultwatch.vault.compliance", "cryptography.hazmat.primitives.asymmetric.ec"): _SAY_WHY,
    ("vaultwatch.vault.compliance", "cryptography.hazmat.primitives.asymmetric.ed25519"): _SAY_WHY,
    ("vaultwatch.vault.compliance", "cryptography.hazmat.primitives.asymmetric.rsa"): _SAY_WHY,
    ("vaultwatch.vault.compliance", "cryptography.x509"): _SAY_WHY,
    ("vaultwatch.vault.exposure", "importlib.resources"): _SAY_WHY,
    ("vaultwatch.vault.exposure", "jinja2.Environment"): _SAY_WHY,
    ("vaultwatch.service.ops", "uvicorn"): _SAY_WHY,
    ("vaultwatch.service.summary", "datetime.UTC"): _SAY_WHY,
    ("vaultwatch.service.summary", "datetime.datetime"): _SAY_WHY,
    ("vaultwatch.service.summary", "rich.table.Table"): _SAY_WHY,
    **{
        ("vaultwatch.service.wiring", target): _SAY_WHY
        for target in (
            "alerts.store.Store",
            "ingest.kafka_config.ConsumerSettings",
            "ingest.kafka_config.ProducerSettings",
            "ingest.kafka_config.import_kafka",
            "ingest.kafka_config.producer_config",
            "ingest.sources.kafka.DeadLetterQueue",
            "ingest.sources.kafka.KafkaSource",
            "ingest.sources.kafka.dlq_topic",
            "vaultwatch.service.archive.EventArchive",
            "alerts.route.Router",
            "alerts.route.RouterConfig",
            "threading",
            "vaultwatch.service.worker.PeriodicTask",
            "vaultwatch.vault.roles.CapabilityRefresher",
            "alerts.channels.config.build_channels",
            "alerts.channels.config.load_config",
            "alerts.deliver.DeliveryWorker",
            "alerts.secrets.SecretResolver",
            "datetime.UTC",
            "datetime.datetime",
            "vaultwatch.report.period_for",
        )
    },
}


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> Iterator[tuple[str, Path]]:
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            yield module_name(path), path


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module, or module.name for ``from module import name``
    line: int
    in_function: bool
    #: A comment on the import's lines, or directly above it (or above its group of imports).
    explained: bool = False


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = importer if is_package else importer.rpartition(".")[0]
    parts = package.split(".")
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _comments(text: str) -> tuple[set[int], set[int]]:
    """Lines holding a reason comment (tool directives aside), and those holding only a comment."""
    any_line: set[int] = set()
    alone: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT and not _DIRECTIVE.match(tok.string):
            any_line.add(tok.start[0])
            if not tok.line[: tok.start[1]].strip():
                alone.add(tok.start[0])
    return any_line, alone


def imports(name: str, path: Path) -> Iterator[Import]:
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text, str(path))
    is_package = path.name == "__init__.py"
    commented, comment_only = _comments(text)
    import_lines = {
        line
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for line in range(node.lineno, (node.end_lineno or node.lineno) + 1)
    }

    def explained(node: ast.stmt) -> bool:
        if commented & set(range(node.lineno, (node.end_lineno or node.lineno) + 1)):
            return True
        above = node.lineno - 1
        while above in import_lines:
            above -= 1
        return above in comment_only

    def visit(node: ast.AST, in_function: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(name, alias.name, child.lineno, in_function, explained(child))
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(name, is_package, child)
                for alias in child.names:
                    target = f"{base}.{alias.name}" if alias.name != "*" else base
                    yield Import(name, target, child.lineno, in_function, explained(child))
            yield from visit(child, inside)

    yield from visit(tree, False)


def rule_broken(imp: Import) -> str | None:
    """Why ``imp`` breaks a layer rule, or None."""
    src, dst = imp.module, imp.target
    if within(src, "ingest"):
        for pkg in ("detect", "alerts", "vaultwatch"):
            if within(dst, pkg):
                return f"ingest imports {pkg}"
    if within(src, "detect"):
        for pkg in ("alerts", "vaultwatch"):
            if within(dst, pkg):
                return f"detect imports {pkg}"
    if within(src, "alerts"):
        if within(dst, "vaultwatch"):
            return "alerts imports vaultwatch"
        if within(dst, "detect") and not within(dst, "detect.alert"):
            return "alerts imports detect beyond the alert contract (detect.alert)"
    src_is_demo = any(within(src, d) for d in DEMO) or src in DEMO_VERB
    if not src_is_demo and any(within(dst, d) for d in DEMO):
        return "production code imports the demo"
    if imp.in_function and any(within(src, p) for p in MODULE_LEVEL_ONLY):
        return "function-level import"
    if imp.in_function and not imp.explained and any(within(src, p) for p in MODULE_LEVEL_UNLESS_EXPLAINED):
        return "function-level import with no comment saying why"
    return None


def violations() -> dict[tuple[str, str], str]:
    found: dict[tuple[str, str], str] = {}
    for name, path in modules():
        for imp in imports(name, path):
            why = rule_broken(imp)
            if why is not None:
                key = (name, imp.target)
                where = f"{path.relative_to(ROOT)}:{imp.line}"
                found[key] = f"{where}: {why} ({imp.target})"
    return found


def test_import_layers() -> None:
    found = violations()
    new = {k: v for k, v in found.items() if k not in KNOWN}
    stale = sorted(set(KNOWN) - set(found))
    assert not new, "layer violations:\n" + "\n".join(sorted(new.values()))
    assert not stale, f"fixed violations still listed in KNOWN (remove them): {stale}"


# -- the checker itself --------------------------------------------------------------------------------
def _check(src: str, module: str, tmp_path: Path, *, package: bool = False) -> list[str]:
    path = tmp_path / ("__init__.py" if package else "m.py")
    path.write_text(src)
    return [w for imp in imports(module, path) if (w := rule_broken(imp)) is not None]


def test_the_rules_catch_what_they_say(tmp_path: Path) -> None:
    assert _check("import detect.engine\n", "ingest.parse", tmp_path) == ["ingest imports detect"]
    assert _check("from alerts.model import X\n", "detect.engine", tmp_path) == ["detect imports alerts"]
    assert _check("from ..settings import S\n", "detect.sub.x", tmp_path) == []
    assert (
        _check("from detect.alert import Alert\nfrom detect import alert\n", "alerts.store", tmp_path) == []
    )
    assert _check("from detect import Engine\n", "alerts.store", tmp_path) == [
        "alerts imports detect beyond the alert contract (detect.alert)"
    ]
    assert _check("from detect.engine import Engine\n", "alerts.store", tmp_path) != []
    assert _check("from ..settings import S\n", "alerts.channels.x", tmp_path) == []
    assert _check("from ...vaultwatch import x\n", "alerts.channels.x", tmp_path) == [
        "alerts imports vaultwatch"
    ]
    assert _check("from ..demo.traffic import T\n", "vaultwatch.report", tmp_path, package=True) == [
        "production code imports the demo"
    ]
    assert _check("from .. import traffic\n", "vaultwatch.cli.run", tmp_path) == [
        "production code imports the demo"
    ]
    assert _check("from ..demo import stack\n", "vaultwatch.cli.demo", tmp_path) == []
    assert _check("from .traffic import T\n", "vaultwatch.demo.stack", tmp_path) == []
    assert _check("def f():\n    import json\n", "detect.rules", tmp_path) == ["function-level import"]
    assert _check("def f():\n    import json\n", "vaultwatch.cli.run", tmp_path) == []
    assert (
        _check("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import json\n", "detect.x", tmp_path)
        == []
    )
    # The shell's vault/ and service/: lazy only with a reason; cli/ and the demo are free.
    lazy = "def f():\n    from ..report import period_for\n    import json\n"
    why = "function-level import with no comment saying why"
    assert _check(lazy, "vaultwatch.service.wiring", tmp_path) == [why, why]
    assert _check(lazy, "vaultwatch.vault.rotation", tmp_path) == [why, why]
    assert _check(lazy, "vaultwatch.cli.report", tmp_path) == []
    assert _check(lazy, "vaultwatch.demo.stack", tmp_path) == []
    above = "def f():\n    # only `report` needs it\n    from ..report import period_for\n    import json\n"
    assert _check(above, "vaultwatch.service.wiring", tmp_path) == []
    trailing = "def f():\n    import uvicorn  # heavy; only `serve` runs it\n"
    assert _check(trailing, "vaultwatch.service.ops", tmp_path) == []
    directive = "def f():\n    import uvicorn  # noqa: PLC0415\n"
    assert _check(directive, "vaultwatch.service.ops", tmp_path) == [why]
    apart = "# a module comment\n\ndef f():\n    import json\n"
    assert _check(apart, "vaultwatch.service.x", tmp_path) == [why]
    assert _check("# why\nimport json\n", "detect.rules", tmp_path) == []  # module level: fine
    assert _check("def f():\n    # why\n    import json\n", "detect.rules", tmp_path) == [
        "function-level import"
    ]  # ingest, detect and alerts: no reason is enough


# -- long modules say why ------------------------------------------------------------------------------
#: Lines above which a module must say in its docstring why it is that long.
LONG = 600
_LONG_WORD = re.compile(r"\blong(?:er)?\b(?!-)|\b\d+ lines\b", re.I)
_REASON_WORD = re.compile(r"\bbecause\b|\bwhy\b|\bon purpose\b|:", re.I)


def says_why_long(doc: str) -> bool:
    """A sentence of ``doc`` calls the module long and gives the reason."""
    for sentence in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
        if _LONG_WORD.search(sentence) and _REASON_WORD.search(sentence):
            return True
    return False


def long_modules() -> Iterator[tuple[str, Path, int]]:
    for name, path in modules():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > LONG:
            yield name, path, lines


def test_long_modules_say_why() -> None:
    found = list(long_modules())
    assert found, "no module over the limit: the check would prove nothing"
    silent = [
        f"{path.relative_to(ROOT)} ({lines} lines)"
        for _, path, lines in found
        if not says_why_long(ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or "")
    ]
    assert not silent, (
        f"modules over {LONG} lines whose docstring does not say why (a sentence with 'long' or "
        "'N lines' and 'because', 'why', 'on purpose' or a colon):\n" + "\n".join(silent)
    )


def test_the_long_module_rule_reads_sentences() -> None:
    assert says_why_long("Parse lines.\n\nLong because the two paths must agree.")
    assert says_why_long("One module, longer than most: every signal shares a pass.")
    assert says_why_long("It runs to about 800 lines on purpose: one function per section.")
    assert says_why_long("The helpers sit at its top, which is why it is long.")
    assert not says_why_long("Parse lines. It is long.")  # no reason
    assert not says_why_long("Names kept for long-standing reasons: JWT_KEY_FILE.")  # not about length
    assert not says_why_long("A long token is refused. It is split because: reasons.")  # two sentences
