"""The README is a front page that links the reference, and the reference documents every key."""

from __future__ import annotations

import re
from dataclasses import fields, is_dataclass
from typing import Any

from lrlab.core.config import Config
from tests.conftest import REPO


def _keys(schema: Any, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for f in fields(schema):
        value = getattr(schema, f.name)
        keys |= _keys(value, f"{prefix}{f.name}.") if is_dataclass(value) else {f"{prefix}{f.name}"}
    return keys


def test_every_key_of_the_schema_is_documented_under_docs() -> None:
    keys = _keys(Config())
    assert {"lr", "dataset.true_w", "engine.name", "optimizer.betas"} <= keys  # the walk sees nested groups
    documented = (REPO / "docs" / "configuration.md").read_text()
    assert sorted(key for key in keys if f"`{key}`" not in documented) == []


def test_the_readme_is_a_front_page_that_links_every_docs_page() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)", readme))
    pages = {f"docs/{page.name}" for page in (REPO / "docs").glob("*.md")}
    assert pages and pages <= linked, sorted(pages - linked)
    for command in ("make sweep", "make test", "make lint"):
        assert command in readme
