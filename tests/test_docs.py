"""The documentation stays true: the config reference lists exactly the keys of the schema,
and every relative link between the README and docs/ leads to a file that exists."""

from __future__ import annotations

import dataclasses
import re
import typing

import pytest

from automodel import config
from tests.conftest import ROOT

DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
# Linked from the README and written on another branch; checked here once it exists.


def schema_keys(cls: type, prefix: str = "") -> set[str]:
    """Dotted names of the schema's leaves: data.path, study.n_trials, seed, ..."""
    hints = typing.get_type_hints(cls)  # config.py's annotations are strings
    keys = set()
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            keys |= schema_keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            keys.add(prefix + f.name)
    return keys


def documented_keys() -> set[str]:
    """The keys in the first column of docs/configuration.md's reference table."""
    text = (DOCS / "configuration.md").read_text()
    table = text.split("## Config reference", 1)[1]
    keys = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            keys |= set(re.findall(r"`([^`]+)`", line.split("|")[1]))
    return keys


def test_the_config_reference_lists_exactly_the_keys_of_the_schema():
    groups = {p.name for p in config.CONF_DIR.iterdir() if p.is_dir()}  # data=csv, ...
    documented = documented_keys() - groups
    schema = schema_keys(config.RunConfig)
    assert not schema - documented, f"missing from docs/configuration.md: {schema - documented}"
    assert not documented - schema, f"not in the schema: {documented - schema}"


def _links(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)  # code is not links
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if not re.match(r"[a-z][a-z0-9+.-]*:", target) and not target.startswith("#"):
            yield target


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_to_files_that_exist(page):
    for target in _links(page):
        path = (page.parent / target.split("#", 1)[0]).resolve()
        assert path.exists(), f"{page.name} links to {target}: no such file"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / t.split("#", 1)[0]).resolve() for t in _links(ROOT / "README.md")}
    assert not set(DOCS.glob("*.md")) - linked
