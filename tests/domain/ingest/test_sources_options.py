"""The sources file (`CHURNSIGNAL_SOURCES_FILE`, services/ingest/sources/options.py): defaults, the documented
example, and errors that name the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.ingest.sources import options as options_module
from services.ingest.sources.options import SourceOptions, load_options, parse_options


def test_without_a_file_every_source_has_its_defaults():
    options = load_options(None)
    assert options == SourceOptions()
    assert (options.zendesk.account_field, options.intercom.account_field, options.typeform.account_field,
            options.delighted.account_field) == ("organization_id", "account_id", "account_id", "account_id")
    assert options.hubspot.closed_stages == ["4"] and options.typeform.score_field is None


def test_the_example_of_the_module_docstring_is_a_valid_file():
    doc = options_module.__doc__ or ""
    example = "\n".join(line[4:] for line in doc.splitlines() if line.startswith("    "))
    options = parse_options(example)
    assert options.zendesk.accounts == {"8447346622462": "acme"}
    assert options.hubspot.accounts == {"1246965": "acme"}
    assert (options.typeform.score_field, options.typeform.kind, options.typeform.contact_field) == (
        "nps_score", "nps", "email")


def test_unquoted_ids_are_read_as_the_ids_they_spell(tmp_path: Path):
    path = tmp_path / "sources.yaml"
    path.write_text("zendesk:\n  accounts:\n    8447346622462: acme\n    42: 7\nhubspot:\n  closed_stages: [4, 5]\n")
    options = load_options(str(path))
    assert options.zendesk.accounts == {"8447346622462": "acme", "42": "7"}
    assert options.hubspot.closed_stages == ["4", "5"]


@pytest.mark.parametrize(("text", "named"), [
    ("zendsek: {}\n", "zendsek"),
    ("zendesk:\n  account_feild: x\n", "zendesk.account_feild"),
    ("typeform:\n  kind: ces\n", "typeform.kind"),
    ("- zendesk\n", "a mapping"),
    ("zendesk: [\n", "not valid YAML"),
])
def test_a_bad_file_names_the_problem(text: str, named: str):
    with pytest.raises(ValueError, match=named):
        parse_options(text)


def test_an_unreadable_file_names_the_path(tmp_path: Path):
    with pytest.raises(ValueError, match="cannot read the sources file .*missing.yaml"):
        load_options(str(tmp_path / "missing.yaml"))
