from __future__ import annotations

from collections.abc import Iterator

import pytest
from usbrig import GuestStack, LocalStack, open_stack


@pytest.fixture(scope="session")
def usb_stack() -> Iterator[LocalStack | GuestStack]:
    """One real USB stack (this kernel's dummy_hcd, or one guest) for the whole session."""
    stack = open_stack()
    try:
        yield stack
    finally:
        stack.close()
