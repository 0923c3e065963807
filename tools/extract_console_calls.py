"""Extract every ``/api/`` call New API's classic web console makes, for
tests/fixtures/newapi_console_calls.json (issue 12: the route-compatibility replay).

Reads a New API checkout (git directory and commit given on the command line; NA-0718 =
5a6c53d, the last session-cookie build, whose ``web/classic`` console is the one that logs
in with a cookie plus ``New-Api-User``) and prints ``[{method, path, query, source}]``:
the first argument of every ``API.get/post/put/delete/patch(...)`` call, or the string
literals assigned to the variable passed instead. Template parts (``${...}``) are kept
as written; the test gives them concrete values.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

CALL = re.compile(r"API\.(get|post|put|delete|patch)\(\s*")
LITERAL = re.compile(r"(`(?:[^`\\]|\\.)*`|'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")")
CONDITIONAL = re.compile(r"\$\{[^}]*\?.*$")
IDENT = re.compile(r"[A-Za-z_$][\w$]*")


def git(repo: str, *args: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", repo, *args], check=True, capture_output=True, text=True
    ).stdout


def assigned(text: str, name: str) -> list[str]:
    pattern = re.compile(rf"\b{re.escape(name)}\s*(?:=|\+=)\s*")
    out = []
    for m in pattern.finditer(text):
        lit = LITERAL.match(text, m.end())
        if lit:
            out.append(lit.group(1)[1:-1])
    return out


def calls(text: str) -> list[tuple[str, str]]:
    found = []
    for m in CALL.finditer(text):
        method = m.group(1).upper()
        lit = LITERAL.match(text, m.end())
        if lit:
            found.append((method, lit.group(1)[1:-1]))
            continue
        ident = IDENT.match(text, m.end())
        if ident:
            found.extend((method, value) for value in assigned(text, ident.group(0)))
    return found


def main(repo: str, commit: str, root: str = "web/classic/src") -> None:
    files = git(repo, "ls-tree", "-r", "--name-only", commit, root).split()
    entries: dict[tuple[str, str], dict[str, str]] = {}
    for path in files:
        if not path.endswith((".js", ".jsx", ".ts", ".tsx")):
            continue
        text = git(repo, "show", f"{commit}:{path}")
        for method, url in calls(text):
            if not url.startswith("/api/"):
                continue
            # a conditional part such as ${locale ? `?locale=${locale}` : ''}: optional
            url = CONDITIONAL.sub("", url)
            path_part, _, query = url.partition("?")
            entries.setdefault((method, path_part), {"query": query, "source": path})
    out = [
        {"method": m, "path": p, "query": v["query"], "source": v["source"]}
        for (m, p), v in sorted(entries.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    ]
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
