"""gin's parse errors, translated: the file and line, the statement, and close matches.

gin reports an unknown configurable or parameter as a bare ``ValueError`` or
``KeyError`` with its location appended; ``translate`` turns it into a
``GinConfigError`` that names the file and line and suggests the registry
entries (or parameters) the user probably meant.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import gin

from lopt_core.registry import Registry


class GinConfigError(ValueError):
    """A .gin file or binding could not be parsed or names something unknown.

    ``file`` and ``line`` locate the statement (``file`` is None for a
    command-line binding), ``statement`` is its text, ``suggestions`` the close
    matches found.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        statement: str | None = None,
        suggestions: Sequence[str] = (),
    ):
        super().__init__(message)
        self.file, self.line, self.statement = file, line, statement
        self.suggestions = list(suggestions)


# gin appends '  In file "F", line N\n    STATEMENT' (or 'In bindings string line N')
# to an error for each file it was reading, innermost first.
_LOCATION_RE = re.compile(
    r'\n  In (?:file "(?P<file>[^"]*)", line (?P<line>\d+)|bindings string line (?P<bline>\d+))'
    r"\n    (?P<statement>[^\n]*)"
)
_UNKNOWN_REF_RE = re.compile(r"No configurable matching reference '@(?P<sel>[^'(]+)(?:\(\))?'\.")
_UNKNOWN_RE = re.compile(r"No configurable matching '(?P<sel>[^']+)'\.")
_UNKNOWN_PARAM_RE = re.compile(
    r"Configurable '(?P<sel>[^']+)' doesn't have a parameter named '(?P<param>[^']+)'\."
)
_AMBIGUOUS_RE = re.compile(r"Ambiguous selector '(?P<sel>[^']+)', matches (?P<matches>\[[^\]]*\])")


def _candidates(registry: Registry, core_names: Iterable[str]) -> dict[str, list[str]]:
    """Every name a .gin file may use -> descriptions of what it names."""
    names: dict[str, list[str]] = {}
    for e in registry.entries():
        source = (
            f", {e.distribution} {e.version}" if e.distribution else f", plugin {e.plugin.name}"
        )
        names.setdefault(e.name, []).append(f"{e.name} ({e.kind}{source})")
    for name in core_names:
        names.setdefault(name, []).append(f"{name} (lopt core)")
    return names


def _factory_for(selector: str) -> Callable[..., Any] | None:
    """The function or class a gin selector names (None if unknown or ambiguous)."""
    try:
        match = gin.config._REGISTRY.get_match(selector)
    except (KeyError, ValueError):
        return None
    return None if match is None else match.wrapped


def _parameters(fn: Callable[..., Any]) -> list[str]:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in kinds and p.name != "self"]


def translate(
    error: Exception, registry: Registry, current_file: str | None, core_names: Iterable[str]
) -> GinConfigError:
    """One of gin's errors as a ``GinConfigError`` with its location and close matches.

    ``core_names`` are the core entry points exposed to gin (suggested too).
    """
    """Turn one of gin's errors into a ``GinConfigError`` with location and close matches."""
    text = str(error)
    if isinstance(error, KeyError) and text.startswith(('"', "'")):
        text = text[1:].replace(text[0] + "\n", "\n", 1)  # KeyError quotes its message
    location = _LOCATION_RE.search(text)
    base = text[: location.start()] if location else text
    file = line = statement = None
    if location:
        if location.group("file") is not None:
            file, line = location.group("file"), int(location.group("line"))
        else:
            line = int(location.group("bline"))
        statement = location.group("statement").strip()
    elif isinstance(error, SyntaxError):
        file, line = error.filename or current_file, error.lineno
        statement = (error.text or "").strip() or None
        base = error.msg
    elif type(error).__name__ == "TokenError":  # tokenize.TokenError: an unclosed bracket
        file, base = current_file, "unexpected end of file: an unclosed bracket or string?"

    suggestions: list[str] = []
    hint = ""
    candidates = _candidates(registry, core_names)
    m = _UNKNOWN_REF_RE.search(base) or _UNKNOWN_RE.search(base)
    if m:
        selector = m.group("sel")
        name = selector.rsplit(".", 1)[-1]
        close = difflib.get_close_matches(name, list(candidates), n=5, cutoff=0.6)
        close += [c for c in candidates if c.lower() == name.lower() and c not in close]
        suggestions = [d for c in close for d in candidates[c]]
        what = "reference" if m.re is _UNKNOWN_REF_RE else "configurable"
        base = f"unknown {what} {selector!r}: no registry entry or lopt configurable has that name."
        if suggestions:
            hint = "\n  Did you mean: " + ", ".join(suggestions) + "?"
        hint += "\n  " + registry.plugins_summary().replace("\n", "\n  ")
    elif m := _UNKNOWN_PARAM_RE.search(base):
        selector, param = m.group("sel"), m.group("param")
        fn = _factory_for(selector)
        params = _parameters(fn) if fn is not None else []
        suggestions = difflib.get_close_matches(param, params, n=3, cutoff=0.5)
        base = f"{selector!r} has no parameter {param!r}."
        if suggestions:
            hint = "\n  Did you mean: " + ", ".join(suggestions) + "?"
        if params:
            hint += f"\n  Parameters of {selector}: {', '.join(params)}."
    elif m := _AMBIGUOUS_RE.search(base):
        selector = m.group("sel")
        base = (
            f"{selector!r} is ambiguous: it matches {m.group('matches')}. "
            "Use the full selector, e.g. lopt.<kind>.<name>."
        )

    if file is not None and os.path.isabs(file):
        relative = os.path.relpath(file)
        file = file if relative.startswith("..") else relative  # as the user would type it
    if file is not None:
        where = f"{file}:{line}: " if line is not None else f"{file}: "
    elif line is not None:
        where = "gin binding: "
    else:
        where = ""
    shown = f"\n    {statement}" if statement else ""
    return GinConfigError(
        f"{where}{base}{shown}{hint}",
        file=file,
        line=line,
        statement=statement,
        suggestions=suggestions,
    )
