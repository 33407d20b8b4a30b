"""Which members a partial pull takes: ``--include GLOB`` / ``--exclude GLOB`` on member paths.

Pure (no I/O). The globs are a documented subset of gitignore's pattern format (git-scm.com,
gitignore(5), "PATTERN FORMAT"); no library for it is a dependency, so this is a small matcher:

- ``*`` matches any run of characters but ``/``; ``?`` one character but ``/``; ``[abc]``,
  ``[a-z]``, ``[!abc]`` one character of (or not of) a set.
- ``**`` as a whole component matches any number of components: ``**/x`` (x at any depth),
  ``a/**`` (everything under a), ``a/**/b`` (b at any depth under a).
- A pattern with no ``/`` but a trailing one matches a name at any depth (``*.json``,
  ``captions.json``); one with a ``/`` at its start or in its middle is anchored at the
  dataset root (``/captions.json``, ``images/0000``).
- A trailing ``/`` matches directories only; ``\\`` makes the next character literal.
- Not supported, and refused rather than misread: negation (``!pattern``) and POSIX character
  classes (``[[:digit:]]``).
- A pattern that matches a directory matches everything under it.

A member is selected when it matches an ``--include`` (or none is given) and no ``--exclude``.
Directories are kept where they are selected themselves or hold a selected member.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import UsageError


def _translate(glob: str) -> str:
    """The regular expression (no anchors) for one glob's path part."""
    out, i, n = [], 0, len(glob)
    while i < n:
        c = glob[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\" and i + 1 < n:  # gitignore: a backslash makes the next character literal
            out.append(re.escape(glob[i + 1]))
            i += 1
        elif c == "[":
            j = glob.find("]", i + 2 if glob[i + 1:i + 2] in ("!", "]") else i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = glob[i + 1:j]
                if "[:" in body:
                    raise ValueError("POSIX character classes ([:digit:] ...) are not supported")
                neg = body.startswith("!")
                body = body[1:] if neg else body
                out.append("[" + ("^/" if neg else "") + body.replace("\\", "\\\\").replace("^", "\\^") + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


@dataclass(frozen=True, slots=True)
class _Pattern:
    text: str
    regex: re.Pattern[str]
    dir_only: bool


def _compile(pattern: str, flag: str) -> _Pattern:
    """Raises UsageError: an empty pattern, or one holding ``..`` or a NUL."""
    p = pattern
    if not p.strip("/") or "\x00" in p or ".." in p.split("/"):
        raise UsageError(f"{flag} {pattern!r} is not a usable pattern",
                         hint="a glob on member paths, e.g. 'captions.json', 'images/0000/', '*.json'")
    if p.startswith("!"):
        raise UsageError(f"{flag} {pattern!r}: gitignore's negation '!' is not supported",
                         hint="select with --include and leave out with --exclude (write '\\!' for a name "
                              "that starts with '!')")
    dir_only = p.endswith("/")
    p = p.rstrip("/")
    anchored = "/" in p
    p = p.lstrip("/")
    parts = p.split("/")
    pieces: list[str] = []
    for k, part in enumerate(parts):
        last = k == len(parts) - 1
        if part == "**":
            pieces.append(".*" if last else "(?:[^/]+/)*")
        else:
            try:
                pieces.append(_translate(part) + ("" if last else "/"))
            except ValueError as err:
                raise UsageError(f"{flag} {pattern!r}: {err}", hint="use a set such as [0-9]") from err
    body = "".join(pieces)
    if not anchored:
        body = "(?:[^/]+/)*" + body
    try:
        return _Pattern(pattern, re.compile(body, re.DOTALL), dir_only)
    except re.error as err:  # e.g. a reversed range [z-a]
        raise UsageError(f"{flag} {pattern!r} is not a usable pattern ({err.msg})",
                         hint="a glob on member paths, e.g. 'captions.json', 'images/0000/', '*.json'") from err


def _matches(pat: _Pattern, path: str, is_dir: bool) -> bool:
    """The pattern matches ``path`` or one of its parent directories."""
    if pat.regex.fullmatch(path) and (is_dir or not pat.dir_only):
        return True
    while "/" in path:
        path = path.rsplit("/", 1)[0]
        if pat.regex.fullmatch(path):
            return True
    return False


_REGEX_LOOK = re.compile(r"^\^|\$$|\.\*|\.\+|\\[.dws]|\([^)]*\|[^)]*\)|\{\d")
"""What only a regular expression would hold: ``^...``, ``...$``, ``.*``, ``.+``, ``\\.``, ``\\d``,
``(a|b)``, ``x{2}`` (a member path may hold any of these characters, so it is only a hint)."""


def _empty_by_exclusion(exclude: tuple[_Pattern, ...]) -> str | None:
    """The --exclude pattern that leaves out every member (``**``, ``*``, ``/**``...), if any."""
    for p in exclude:
        if not p.dir_only and p.regex.fullmatch("a") and p.regex.fullmatch(".a") and p.regex.fullmatch("a.b"):
            return p.text
    return None


@dataclass(frozen=True, slots=True)
class Selection:
    """The ``--include`` and ``--exclude`` patterns of a partial pull (see module docstring).

    Raises (``make``): UsageError for an unusable pattern.
    """

    include: tuple[str, ...]
    exclude: tuple[str, ...]
    _inc: tuple[_Pattern, ...] = ()
    _exc: tuple[_Pattern, ...] = ()

    @classmethod
    def make(cls, include: list[str] | tuple[str, ...] = (), exclude: list[str] | tuple[str, ...] = ()) -> Selection:
        made = cls(tuple(include), tuple(exclude), tuple(_compile(p, "--include") for p in include),
                   tuple(_compile(p, "--exclude") for p in exclude))
        everything = _empty_by_exclusion(made._exc)
        if everything is not None:
            raise UsageError(f"--exclude {everything!r} leaves out every member: the selection is empty",
                             hint="exclude less (e.g. --exclude '*.jpg'), or name what you want with --include")
        return made

    def selects(self, path: str, is_dir: bool = False) -> bool:
        """True if the member at ``path`` (relative, ``/``-separated) is selected."""
        if self._inc and not any(_matches(p, path, is_dir) for p in self._inc):
            return False
        return not any(_matches(p, path, is_dir) for p in self._exc)

    def empty_hint(self, name: str = "") -> str:
        """The hint for a selection that matches no member of dataset ``name``: what in the
        patterns looks like a mistake (a regular expression, a ``./`` or ``NAME/`` prefix),
        and how to see the member paths."""
        patterns = self.include + self.exclude
        why = "check the patterns against the member paths"
        if any(_REGEX_LOOK.search(p) for p in patterns):
            why = ("patterns are gitignore-style globs on member paths like images/00/*.jpg, not regular "
                   "expressions")
        elif any(p.startswith("./") for p in patterns):
            why = "paths are relative to the dataset's root, without './' (e.g. captions.json)"
        elif name and any(p.startswith(f"{name}/") or p.startswith(f"/{name}/") for p in patterns):
            why = f"paths are relative to the dataset's root: drop the leading '{name}/'"
        return f"{why}; 's3sync ls SOURCE --members [GLOB...]' lists the member paths a glob matches"

    def to_json(self) -> dict[str, list[str]]:
        """The patterns, as recorded in ``complete.json``."""
        return {"include": list(self.include), "exclude": list(self.exclude)}
