"""Feature bits, the device status field, and the host's feature policy.

Feature bits (virtio 1.2 §2.2): 0-23 belong to the device type, 24-40 to the
queues and negotiation (the reserved bits of §6), the rest to future
extensions.  Features travel 32 bits at a time, by selector: selector ``s``
carries bits ``32*s .. 32*s+31`` (as ``device_feature_select`` does on PCI,
§4.1.4.3).

The device offers; the driver accepts a subset; the device may refuse it by
not setting FEATURES_OK (§2.2.2, §3.1.1 steps 5-6).  Which offered features a
driver may accept is *policy*, kept by the host (DESIGN §5): a
``FeaturePolicy`` masks what the device offers before the driver sees it and
names what must be accepted, and every negotiation is kept as a
``Negotiation`` record, so what was offered, allowed, supported and agreed is
visible afterwards.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ira.errors import LocalProtocolError
from ira.wire.virtio import FEATURE_WORDS, DeviceStatus

__all__ = [
    "FEATURE_WORDS",
    "FEATURE_WORD_BITS",
    "TRANSPORT_FEATURES",
    "DeviceStatus",
    "Feature",
    "FeaturePolicy",
    "Negotiation",
    "feature_names",
    "feature_word",
    "with_feature_word",
]

#: bits of one feature word (one selector)
FEATURE_WORD_BITS = 32


class Feature(enum.IntEnum):
    """The reserved, device-independent feature bits (virtio 1.2 §6)."""

    INDIRECT_DESC = 28
    EVENT_IDX = 29
    VERSION_1 = 32
    ACCESS_PLATFORM = 33
    RING_PACKED = 34
    IN_ORDER = 35
    ORDER_PLATFORM = 36
    SR_IOV = 37
    NOTIFICATION_DATA = 38
    NOTIF_CONFIG_DATA = 39
    RING_RESET = 40

    @property
    def mask(self) -> int:
        return 1 << self.value


#: the device-independent features this transport implements
TRANSPORT_FEATURES = Feature.VERSION_1.mask | Feature.INDIRECT_DESC.mask | Feature.EVENT_IDX.mask


def feature_word(features: int, select: int) -> int:
    """The 32 feature bits selected by ``select``."""
    return features >> (FEATURE_WORD_BITS * select) & 0xFFFFFFFF


def with_feature_word(features: int, select: int, word: int) -> int:
    """``features`` with the bits of selector ``select`` replaced by ``word``."""
    shift = FEATURE_WORD_BITS * select
    return features & ~(0xFFFFFFFF << shift) | (word & 0xFFFFFFFF) << shift


def feature_names(features: int) -> list[str]:
    """Names of the reserved bits set in ``features``, then ``bit<n>`` for the others."""
    names = []
    bit = 0
    while features >> bit:
        if features >> bit & 1:
            try:
                names.append(Feature(bit).name)
            except ValueError:
                names.append(f"bit{bit}")
        bit += 1
    return names


@dataclass(frozen=True, slots=True)
class Negotiation:
    """The record of one feature negotiation."""

    #: what the device offered
    offered: int
    #: what the policy let the driver see
    allowed: int
    #: what the driver can use
    supported: int
    #: what was written as driver features: offered & allowed & supported
    accepted: int
    #: the device kept FEATURES_OK set (False: it refused the set, or the policy did)
    features_ok: bool

    def describe(self) -> str:
        state = "ok" if self.features_ok else "refused"
        return f"{state}: {' '.join(feature_names(self.accepted)) or '-'}"


@dataclass(frozen=True, slots=True)
class FeaturePolicy:
    """The host's rule on what a driver may accept from a device.

    ``allowed`` masks the device's offer (all bits by default); ``required``
    must end up accepted or the driver gives up (FAILED, §2.2.1) — by
    default VIRTIO_F_VERSION_1, since this transport has no legacy mode.
    """

    allowed: int = (1 << (FEATURE_WORD_BITS * FEATURE_WORDS)) - 1
    required: int = Feature.VERSION_1.mask

    def __post_init__(self) -> None:
        if self.required & ~self.allowed:
            raise LocalProtocolError("a policy cannot require a feature it does not allow")

    def accept(self, offered: int, supported: int) -> int:
        """The driver features to write: what was offered, allowed and supported."""
        return offered & self.allowed & supported

    def acceptable(self, accepted: int) -> bool:
        """True if ``accepted`` holds every required feature."""
        return accepted & self.required == self.required
