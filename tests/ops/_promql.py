"""A small PromQL reader for the ops tests: which metric names does an expression select?

promtool proves an expression *parses* (test_alerts/test_dashboards run it); this module only
answers the question promtool cannot: the set of metric names an expression reads, so they can be
checked against `exported_metrics.EXPORTED`. It tokenises the expression, drops label-matcher
blocks, range/subquery brackets and grouping-label lists, and keeps every identifier that is not
a keyword, an operator word, a function or an aggregation.
"""

from __future__ import annotations

import re

# Grafana template variables as they appear in dashboard targets, with a stand-in that keeps the
# expression valid PromQL (values only matter for parsing, never for results).
GRAFANA_VARIABLES: dict[str, str] = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
}

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<duration>(?:[0-9]+(?:ms|[smhdwy]))+)
  | (?P<number>0[xX][0-9a-fA-F]+|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>=(){}\[\],:@])
    """,
    re.VERBOSE,
)

KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
        "start",
        "end",
        "atan2",
    }
)
AGGREGATIONS = frozenset(
    {
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    }
)
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})


class PromQLSyntaxError(ValueError):
    """The expression cannot be tokenised (promtool gives the authoritative verdict)."""

    def __init__(self, expr: str, pos: int) -> None:
        super().__init__(f"cannot tokenise PromQL at offset {pos}: {expr[pos : pos + 30]!r}")
        self.expr = expr
        self.pos = pos


def substitute_grafana_variables(expr: str, variables: dict[str, str] | None = None) -> str:
    """Replace `$var` / `${var}` / `[[var]]` with stand-ins so the text is plain PromQL."""
    table = dict(GRAFANA_VARIABLES)
    table.update(variables or {})
    for name, value in sorted(table.items(), key=lambda kv: -len(kv[0])):
        bare = name.lstrip("$")
        expr = expr.replace("${" + bare + "}", value).replace(name, value)
        expr = expr.replace("[[" + bare + "]]", value)
    return expr


def _tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise PromQLSyntaxError(expr, pos)
        kind = m.lastgroup or ""
        if kind not in ("ws", "comment"):
            out.append((kind, m.group()))
        pos = m.end()
    return out


def metric_names(expr: str) -> set[str]:
    """The metric names `expr` selects, including `{__name__="..."}` matchers."""
    toks = _tokens(expr)
    names: set[str] = set()
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        if text == "{":
            # Label matchers: only __name__="x" names a metric.
            depth_end = i + 1
            while depth_end < len(toks) and toks[depth_end][1] != "}":
                depth_end += 1
            block = toks[i + 1 : depth_end]
            for j in range(len(block) - 2):
                if block[j] == ("ident", "__name__") and block[j + 1][1] == "=":
                    names.add(block[j + 2][1][1:-1])
            i = depth_end + 1
            continue
        if text == "[":
            while i < len(toks) and toks[i][1] != "]":
                i += 1
            i += 1
            continue
        if kind == "ident":
            nxt = toks[i + 1][1] if i + 1 < len(toks) else ""
            if text in GROUPING:
                # skip the parenthesised label list that follows
                if nxt == "(":
                    i += 2
                    while i < len(toks) and toks[i][1] != ")":
                        i += 1
                i += 1
                continue
            if text in KEYWORDS:
                i += 1
                continue
            if nxt == "(" or text in AGGREGATIONS and nxt in GROUPING:
                i += 1  # function call or aggregation
                continue
            names.add(text)
        i += 1
    return names
