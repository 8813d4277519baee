"""Pytest fixtures for the fakes. Use them from a conftest or test module:

    from tests.support.fixtures import fake_slack, fake_smtp  # noqa: F401
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.slack import FakeSlack
from tests.support.smtp import FakeSmtp


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    with FakeSlack() as slack:
        yield slack


@pytest.fixture
def fake_smtp() -> Iterator[FakeSmtp]:
    with FakeSmtp() as smtp:
        yield smtp
