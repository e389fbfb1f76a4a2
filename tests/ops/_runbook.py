"""docs/runbook.md's shell and SQL blocks, as commands the rehearsal fleet can run.

A shell block starts with ``# host: gatherer|deduplicator|admin``; a SQL block with
``-- db: gatherer|production|both|timescaledb``. Each shell command is classified:

* EXCLUDED: it needs what one machine does not have (EC2, SSM, systemd, terraform's cloud, a
  released version on PyPI) or a TimescaleDB the rehearsal's plain PostgreSQL lacks. Each
  exclusion names its reason (and the issue that covers it, where one does).
* runnable: run by bash on the rehearsal host the block names (gatherer blocks on gatherer-2,
  the host the runbook's examples name), after the rehearsal's substitutions
  (tests/ops/_rehearsal.py) plus these, for commands only: ``journalctl -u UNIT ...`` reads that
  unit's journal file (its stdout and stderr), ``sudo`` / ``sudo -u kalshi`` drop (we are that
  user), ``localhost:8080/9090`` and ``127.0.0.1:8081`` are the host's ports, and the runbook's
  example ticker is a market of the simulator.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ._rules import RUNBOOK

EXAMPLE_TICKER = "KXBTCD-25DEC3117-T99999.99"

# (pattern, reason): commands that cannot run on one machine.
EXCLUDED = (
    (r"\baws ec2 ", "EC2 instances do not exist on one machine"),
    (r"\baws ssm ", "SSM Session Manager needs an EC2 instance"),
    (r"^(sudo )?systemctl ", "no systemd manages the rehearsal's processes"),
    (r"^terraform ", "terraform plan/apply/destroy need an AWS account"),
    (r"^cd terraform$", "part of the terraform steps above"),
    (r"pip install -U 'kalshi-data==X\.Y\.Z'", "X.Y.Z stands for a future release on PyPI"),
    (r"^aws s3 mv --recursive s3://<bucket>/", "moves days archived before the Hive layout (issue #19); "
                                               "the rehearsal's bucket only ever had the new layout"),
)
# A SQL block that needs TimescaleDB; the rehearsal's PostgreSQL is plain (issue #16 adds it).
EXCLUDED_SQL_TAGS = {"timescaledb": "needs TimescaleDB; the rehearsal runs plain PostgreSQL "
                                    "(issue #16 builds TimescaleDB for the tests)"}
# Greps that find nothing on a healthy fleet: "no line" is their healthy answer.
MAY_FIND_NOTHING = ('grep -E \'"level": ?"(CRITICAL|ERROR|WARN)\'',)


@dataclass(frozen=True)
class ShellBlock:
    host: str  # gatherer | deduplicator | admin
    section: str
    commands: tuple[str, ...]  # continuation lines joined, comments dropped


@dataclass(frozen=True)
class SqlBlock:
    target: str
    section: str
    sql: str


def _section_of(text: str, pos: int) -> str:
    heads = list(re.finditer(r"^#{2,3} (.+)$", text[:pos], re.MULTILINE))
    return heads[-1].group(1).strip() if heads else ""


def shell_blocks() -> list[ShellBlock]:
    text = RUNBOOK.read_text()
    out = []
    for m in re.finditer(r"```sh\n(.*?)```", text, re.DOTALL):
        body = m.group(1)
        body = re.sub(r"^\s+", "", body, flags=re.MULTILINE)  # blocks inside list items are indented
        first, _, rest = body.partition("\n")
        tag = re.fullmatch(r"# host: (gatherer|deduplicator|admin)", first.strip())
        assert tag, f"shell block without '# host: ...' first line: {body[:80]!r}"
        joined = re.sub(r"\\\n\s*", " ", rest)
        commands = []
        for line in joined.splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()  # trailing comments
            if line and not line.startswith("#"):
                commands.append(line)
        out.append(ShellBlock(tag.group(1), _section_of(text, m.start()), tuple(commands)))
    return out


def sql_blocks() -> list[SqlBlock]:
    text = RUNBOOK.read_text()
    out = []
    for m in re.finditer(r"```sql\n(.*?)```", text, re.DOTALL):
        first, _, rest = m.group(1).partition("\n")
        tag = re.fullmatch(r"-- db: (\w+)", first.strip())
        assert tag, f"sql block without '-- db: <target>': {m.group(1)[:80]!r}"
        out.append(SqlBlock(tag.group(1), _section_of(text, m.start()), rest.strip()))
    return out


def exclusion(command: str) -> str | None:
    for pattern, reason in EXCLUDED:
        if re.search(pattern, command):
            return reason
    return None


def translate(command: str, *, journals: dict[str, str], ports: dict[str, int], ticker: str) -> str:
    """The command as it runs on the rehearsal host (paths are mapped by the caller)."""
    command = re.sub(r"journalctl -u (\S+)[^|]*", lambda m: f"cat {journals[m.group(1)]} ", command)
    command = re.sub(r"\bsudo -u kalshi ", "", command)
    command = re.sub(r"\bsudo ", "", command)
    command = command.replace("localhost:8080", f"localhost:{ports['health']}")
    command = command.replace("localhost:9090", f"localhost:{ports['metrics']}")
    if "admin" in ports:
        command = command.replace("127.0.0.1:8081", f"127.0.0.1:{ports['admin']}")
    return command.replace(EXAMPLE_TICKER, ticker)


def inline_commands() -> list[tuple[str, str]]:
    """(section, command) of the inline `curl -s localhost...` checks in the alert sections."""
    text = RUNBOOK.read_text()
    out = []
    for m in re.finditer(r"`(curl -s localhost:[^`]+)`", text):
        out.append((_section_of(text, m.start()), m.group(1)))
    return out


def inline_host(command: str) -> str:
    """Where an inline check runs: the deduplicator's /health paths and the export there."""
    dedup = (".gatherers", ".components.sync", ".components.production", "kalshi-data export")
    return "deduplicator" if any(d in command for d in dedup) else "gatherer"


def inline_runnable() -> list[tuple[str, str]]:
    """(section, command): inline ``curl -s localhost...`` checks and the export's re-run."""
    text = RUNBOOK.read_text()
    out = []
    for m in re.finditer(r"`((?:curl -s localhost:|sudo -u kalshi /opt/kalshi-data/\.venv/bin/kalshi-data export )[^`]+)`",
                         text):
        out.append((_section_of(text, m.start()), m.group(1)))
    return out


@dataclass(frozen=True)
class Ran:
    command: str  # as written in the runbook
    ran: str  # as run on the rehearsal host
    rc: int
    output: str


def run_script(commands: list[tuple[str, str]], run: Callable[[str], str]) -> list[Ran]:
    """Run translated commands in ONE bash (variables carry over, as in an operator's shell),
    each followed by a marker with its exit status; ``run(script) -> combined output``."""
    lines = ["set -o pipefail"]
    for i, (_orig, cmd) in enumerate(commands):
        lines += [f"echo '@@begin {i}'", cmd, f"echo \"@@rc {i} $?\""]
    out = run("\n".join(lines) + "\n")
    results = []
    for i, (orig, cmd) in enumerate(commands):
        m = re.search(rf"@@begin {i}\n(.*?)@@rc {i} (\d+)\n", out, re.DOTALL)
        assert m, f"no result for {cmd!r}:\n{out[-2000:]}"
        results.append(Ran(orig, cmd, int(m.group(2)), m.group(1)))
    return results
