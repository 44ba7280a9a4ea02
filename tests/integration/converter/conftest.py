from __future__ import annotations

from collections.abc import Iterator

import pytest

from alchemist.converter.engine import ConversionEngine


@pytest.fixture(scope="module")
def engine() -> Iterator[ConversionEngine]:
    """One engine (and its reader child) shared by a module, as a worker shares it."""
    engine = ConversionEngine()
    yield engine
    engine.close()
