"""Passwords out of everything lrlab prints or records: ``scheme://user:password@host`` becomes ``user:***@``."""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit, urlunsplit

# scheme://user:password@ , also as Hydra escapes it in its logs: scheme\://user\:password@
_URI_WITH_PASSWORD = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*\\?://[^\s:/@\\]*)(\\?:)[^\s@/]*@")


def redact(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` in it replaced by ***."""
    return _URI_WITH_PASSWORD.sub(r"\1\2***@", text)


class RedactPasswords(logging.Filter):
    """A logging filter (Hydra's own log lines among them) that writes URIs without their passwords."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        return True


def redact_uri(uri: str) -> str:
    """One URI with its password replaced by *** (the user name stays, to say who connects)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
