"""Passwords out of everything lrlab prints or records: ``scheme://user:password@host`` becomes
``scheme://user:***@host``, whatever characters the password holds.

Each ``scheme://`` starts a URI, also as Hydra escapes it in its logs (``scheme\\://user\\:password@host``). The
URI runs to the closing quote of a quoted one (``'http://...'``, ``['key=http://...``), to the end of the line
of a YAML value (``key: http://...``), else to whitespace (not Hydra's ``\\ ``); and never past a comma that
starts the next URI (a sweep: ``key=http://u:p@h,http://v:q@g``). Its user information is everything before
its last ``@``, as ``urlsplit`` splits an authority; the password, everything after the first ``:`` in it. A
password need not be a valid one: ``/ ? #`` or whitespace, raw, make a URI that fails, and the error prints
it. So a later ``@`` in a URI's path hides its host too. One case stays ambiguous: in a sentence (neither
quoted nor YAML), ``http://u:a@b c@h`` reads as a URI then a word; whitespace is taken as a password's only
where no ``@`` precedes it (``http://u:a b@h``).
"""

from __future__ import annotations

import logging
import re

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*\\*://")
_PORT = re.compile(r"[0-9]+[\\'\",;)\]}>]*")  # a port, and what may close the text around it
_YAML_KEY = re.compile(r"[ \t]*(?:- +)*(?:[\w.$/+-]+: +)?")  # what precedes a YAML value on its line


def redact(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` in it replaced by ***."""
    if "://" not in text:
        return text
    out: list[str] = []
    pos = 0
    while match := _SCHEME.search(text, pos):
        start = match.end()
        end = _extend(text, start, _end(text, start, _opening(text, match.start())))
        hidden = _hide(text[start:end])
        if hidden is None:  # no password: a URI nested in this one (a ?next=... query) may have one
            out.append(text[pos:start])
            pos = start
        else:
            out += [text[pos:start], hidden]
            pos = end
    out.append(text[pos:])
    return "".join(out)


class RedactPasswords(logging.Filter):
    """A logging filter (Hydra's own log lines among them) that writes URIs without their passwords."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        return True


def redact_uri(uri: str) -> str:
    """One URI with its password replaced by *** (the user name stays, to say who connects)."""
    match = _SCHEME.match(uri)
    if match is None:
        return redact(uri)
    hidden = _hide(uri[match.end() :])
    return uri if hidden is None else uri[: match.end()] + hidden


def _opening(text: str, i: int) -> str:
    """What ends the URI whose scheme starts at ``i``: the quote just before it, a newline for a YAML value
    (``key: uri``, ``- uri``: unquoted, it runs to the end of its line), else "" (whitespace)."""
    prefix = text[text.rfind("\n", 0, i) + 1 : i]
    if prefix[-1:] in ("'", '"'):
        return prefix[-1]
    word = re.split(r"\s", prefix)[-1].lstrip("[({,")  # the word it is in: ['key=http://..., "k=http://...
    if word[:1] in ("'", '"'):
        return word[0]
    return "\n" if prefix.strip() and _YAML_KEY.fullmatch(prefix) else ""


def _end(text: str, i: int, quote: str) -> int:
    """Where the URI whose authority starts at ``i`` ends; ``quote``: what ends it (``_opening``)."""
    while i < len(text):
        char = text[i]
        if char == "\n" or (char == "," and _SCHEME.match(text, i + 1)) or (char.isspace() and not quote):
            return i
        if char == "\\" and text[i + 1 : i + 2] != "\n":  # an escaped character (Hydra's, a repr's) never ends it
            i += 2
            continue
        if char == quote:
            if quote == "'" and text.startswith("''", i):  # YAML's escaped quote
                i += 2
                continue
            return i
        i += 1
    return len(text)


def _user_before(rest: str, colon: int) -> bool:
    """Whether ``rest[:colon]`` can be a user name: not a host and path, nor an IPv6 address."""
    return colon >= 0 and not any(char in "/?#[" for char in rest[:colon])


def _extend(text: str, start: int, end: int) -> int:
    """The end of a URI whose password holds whitespace (``http://user:pass word@host``): the first word
    after it, on its line and before the next URI, that holds an ``@``. ``host:port`` is not extended."""
    rest = text[start:end]
    colon = rest.find(":")
    if "@" in rest or not _user_before(rest, colon):
        return end
    after = rest[colon + 1 :]
    if any(char in after for char in "/?#") or _PORT.fullmatch(after):
        return end
    line_end = text.find("\n", end)
    limit = len(text) if line_end < 0 else line_end
    if following := _SCHEME.search(text, end, limit):
        limit = following.start()
    at = text.find("@", end, limit)
    return end if at < 0 else _end(text, at, "")


def _hide(rest: str) -> str | None:
    """``rest`` (a URI after its ``//``) with its password replaced by ***; None if it has none."""
    at = rest.rfind("@")
    colon = rest.find(":", 0, max(at, 0))
    if at < 0 or not _user_before(rest, colon):
        return None
    return f"{rest[: colon + 1]}***{rest[at:]}"
