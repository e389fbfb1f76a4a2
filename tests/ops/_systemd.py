"""What systemd does with a unit's ``ExecStart=`` and ``EnvironmentFile=``, for the rehearsal.

Only the parts our units use, implemented to systemd.service(5) / systemd.exec(5): the line is
split into words with its quoting rules, ``%%`` becomes ``%``, ``${VAR}`` is replaced by the
variable's value, and a word that is exactly ``$VAR`` becomes the value split at whitespace (zero
or more words). Any other ``%`` specifier, or a variable the environment lacks where systemd
would substitute an empty string, is an error here: the rehearsal must not pass by accident.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping


class UnitError(AssertionError):
    """A unit line the rehearsal cannot run faithfully."""


def parse_environment_file(text: str) -> dict[str, str]:
    """systemd EnvironmentFile syntax: ``KEY=VALUE`` lines, ``#``/``;`` comments, quotes removed."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key.strip()):
            raise UnitError(f"not an assignment: {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def expand_exec(line: str, env: Mapping[str, str]) -> list[str]:
    """argv of one ``ExecStart=`` value under ``env`` (see the module docstring)."""
    if line[:1] in "-@:+!":
        raise UnitError(f"ExecStart prefix {line[0]!r} is not used by our units: {line}")
    lexer = shlex.shlex(line, posix=True, punctuation_chars=False)
    lexer.whitespace_split = True
    lexer.commenters = ""
    argv: list[str] = []
    for word in lexer:
        if "%" in word.replace("%%", ""):
            raise UnitError(f"unsupported specifier in {word!r}")
        word = word.replace("%%", "%")
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if whole:
            argv.extend(_value(env, whole.group(1)).split())
            continue
        argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: _value(env, m.group(1)), word))
    return argv


def _value(env: Mapping[str, str], name: str) -> str:
    if name not in env:
        raise UnitError(f"${name} is not set by the unit's EnvironmentFile")
    return env[name]
