"""The pages' files, read as text: data reaches the DOM only as text (no HTML parsing sink in
any script), nothing is loaded from another host (the machine may have no internet), and every
file a page names exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from taskflow.web._server import STATIC_DIR

SCRIPTS = sorted(STATIC_DIR.glob("*.js"))
PAGES = sorted(STATIC_DIR.glob("*.html"))
#: What would parse a string as markup or code: a page uses textContent and attributes.
SINKS = ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "Function(")


def test_the_pages_are_there() -> None:
    assert {p.name for p in PAGES} >= {"index.html", "tasks.html", "task.html", "flow.html"}
    assert SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_no_script_parses_markup(script: Path) -> None:
    text = script.read_text()
    assert [sink for sink in SINKS if sink in text] == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_a_page_names_only_files_of_its_own(page: Path) -> None:
    text = page.read_text()
    names = re.findall(r'(?:src|href)="([^"]+)"', text)
    assert names, "a page loads its stylesheet and scripts"
    for name in names:
        assert "//" not in name and not name.startswith("/"), f"{name}: relative URLs only"
        assert (STATIC_DIR / name).is_file(), f"{page.name} names {name}, which is missing"
