"""docs/writing-plugins.md shows the example plugin as it is, and the docs' map and links stay current.

Each code block of the guide that follows an ``<!-- example: PATH -->`` comment must equal the file ``PATH``
byte for byte: edit the example, then paste it into the guide (or the other way round).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
GUIDE = DOCS / "writing-plugins.md"
EXAMPLE = "examples/gbdt2nn-example-plugin"
#: The files a reader needs to write a plugin; the guide must show each in full.
SHOWN = (
    f"{EXAMPLE}/pyproject.toml",
    f"{EXAMPLE}/src/gbdt2nn_example/plugin.py",
    f"{EXAMPLE}/tests/test_plugin.py",
)
#: Guides whose relative links are checked (the hook reference is generated and checked by test_docs.py).
LINKED = ("index.md", "getting-started.md", "writing-plugins.md")

_BLOCK = re.compile(r"<!-- example: (?P<path>\S+) -->\n```[a-z]*\n(?P<code>.*?)```\n", re.DOTALL)
_LINK = re.compile(r"\]\((?P<target>[^)#\s]+)(?:#[^)]*)?\)")


def _blocks() -> dict[str, str]:
    return {m["path"]: m["code"] for m in _BLOCK.finditer(GUIDE.read_text(encoding="utf-8"))}


def test_the_guide_shows_every_file_a_plugin_needs() -> None:
    assert set(SHOWN) <= set(_blocks()), f"docs/writing-plugins.md must show {sorted(set(SHOWN) - set(_blocks()))}"


@pytest.mark.parametrize("path", sorted(_blocks()))
def test_each_code_block_is_the_example_file(path: str) -> None:
    expected = (ROOT / path).read_text(encoding="utf-8")
    assert _blocks()[path] == expected, f"docs/writing-plugins.md shows an old {path}: paste the current file in"


def test_the_index_links_every_page() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    linked = {m["target"] for m in _LINK.finditer(index)}
    missing = sorted(p.name for p in DOCS.glob("*.md") if p.name != "index.md" and p.name not in linked)
    assert not missing, f"docs/index.md does not mention {missing}: add a line for each"


@pytest.mark.parametrize("page", LINKED)
def test_relative_links_resolve(page: str) -> None:
    text = (DOCS / page).read_text(encoding="utf-8")
    targets = {m["target"] for m in _LINK.finditer(text) if "://" not in m["target"]}
    broken = sorted(t for t in targets if not (DOCS / t).exists())
    assert not broken, f"docs/{page} links to missing files: {broken}"
