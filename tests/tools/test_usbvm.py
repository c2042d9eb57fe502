"""The USB guest's options are checked before anything is fetched or started."""

from __future__ import annotations

import pytest

from ira.errors import ConfigError, TransportError
from ira.tools.usbvm import GuestVM


@pytest.mark.parametrize("cpus", [0, -1, 9])
def test_a_guest_needs_one_to_eight_vcpus(cpus: int) -> None:
    with pytest.raises(ConfigError, match="give 1 to 8"):
        GuestVM(cpus=cpus)


def test_a_guest_of_two_vcpus_is_accepted_without_starting() -> None:
    vm = GuestVM(cpus=2)
    with pytest.raises(TransportError, match="not running"):
        _ = vm.workdir
