"""``ira virtio rng LINK [-n BYTES] [--hex]``: read random bytes from a board's virtio-rng.

The host discovers the board's devices, initialises its ``virtio`` device of
virtio id 4 (entropy, virtio 1.2 §5.4) as virtio 1.2 §3.1.1 says — reset,
ACKNOWLEDGE, DRIVER, feature negotiation under the host's policy,
FEATURES_OK, queue setup in shared windows, DRIVER_OK — then offers
device-writable buffers on its request queue until BYTES random bytes came
back.  The bytes go to stdout as they are, or as hex (32 bytes a line) with
``--hex``.  The board needs the device in its profile::

    [[device]]
    type = "virtio-rng"
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass

from ira.errors import ConfigError, DevcallTimeout, TransportError
from ira.runtime import HostClient
from ira.virtio.entropy import ENTROPY_ID, EntropyClient
from ira.virtio.host import BindingState, VirtioBinding

#: bytes per line of ``--hex``
HEX_LINE_BYTES = 32


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "virtio",
        help="virtio devices of a board: read its virtio-rng",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    rng = verbs.add_parser(
        "rng",
        help="read random bytes from the board's virtio-rng",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rng.add_argument("link", metavar="LINK", help="link spec")
    rng.add_argument(
        "-n", "--bytes", type=int, default=32, metavar="BYTES", help="how many (default 32)"
    )
    rng.add_argument("--hex", action="store_true", help="print hex, 32 bytes a line")
    rng.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="give up after S seconds (discovery, initialisation and the read)",
    )
    rng.set_defaults(func=run_rng)


@dataclass(frozen=True, slots=True)
class _Gone:
    """Why the device cannot be used."""

    reason: str


def entropy_binding(client: HostClient, *, timeout_s: float) -> VirtioBinding:
    """The binding of the board's virtio-rng once it is at DRIVER_OK (waits for discovery)."""
    deadline = time.monotonic() + timeout_s
    client.wait_ready(timeout_s)

    def ready() -> VirtioBinding | _Gone | None:
        rngs = [d for d in client.virtio.devices() if d.virtio_id == ENTROPY_ID]
        if not rngs:
            return _Gone(
                'the board has no virtio-rng device; add [[device]] type = "virtio-rng" '
                "to its profile"
            )
        for info in rngs:
            binding = client.virtio.bindings.get(info.device_id)
            if binding is not None and binding.state is BindingState.READY:
                return binding
        if all(info.settled for info in rngs):
            info = rngs[0]
            state = "no driver" if info.state is None else info.state.value
            return _Gone(f"virtio-rng device {info.device_id}: {state}: {info.reason}")
        return None

    found: VirtioBinding | _Gone | None = client.wait_until(
        ready, max(0.0, deadline - time.monotonic())
    )
    if found is None:
        raise DevcallTimeout(
            f"{client.name}: the virtio-rng device did not reach DRIVER_OK within {timeout_s:g} s"
        )
    if isinstance(found, _Gone):
        raise TransportError(f"{client.name}: {found.reason}")
    return found


def read_entropy(client: HostClient, size_bytes: int, *, timeout_s: float = 10.0) -> bytes:
    """``size_bytes`` random bytes from the board's virtio-rng.

    Waits for discovery and the device's initialisation first; ``DevcallTimeout``
    when the bytes do not arrive within ``timeout_s`` in all, ``TransportError``
    when the device goes (board restart, DEVICE_NEEDS_RESET) during the read.
    """
    deadline = time.monotonic() + timeout_s
    binding = entropy_binding(client, timeout_s=timeout_s)
    entropy = binding.client
    if not isinstance(entropy, EntropyClient):
        raise ConfigError(f"{client.name}: virtio id {ENTROPY_ID} is driven by another client")

    def start() -> int:
        offset = len(entropy.received)
        entropy.request(binding, size_bytes)
        return offset

    offset = client.runtime.call(start)
    end = offset + size_bytes

    def arrived() -> bytes | _Gone | None:
        if binding.state is not BindingState.READY:
            return _Gone(binding.reason or binding.state.value)
        if len(entropy.received) < end:
            return None
        return bytes(entropy.received[offset:end])

    got: bytes | _Gone | None = client.wait_until(arrived, max(0.0, deadline - time.monotonic()))
    if got is None:
        raise DevcallTimeout(
            f"{client.name}: {size_bytes} random bytes did not arrive within {timeout_s:g} s"
        )
    if isinstance(got, _Gone):
        raise TransportError(f"{client.name}: the virtio-rng device went mid-read: {got.reason}")
    return got


def run_rng(args: argparse.Namespace) -> int:
    if args.bytes < 1:
        raise ConfigError("-n must be at least 1")
    if not 0 < args.timeout < math.inf:
        raise ConfigError(f"--timeout {args.timeout}: give a positive number of seconds")
    with HostClient(args.link) as client:
        data = read_entropy(client, args.bytes, timeout_s=args.timeout)
    if args.hex:
        for start in range(0, len(data), HEX_LINE_BYTES):
            print(data[start : start + HEX_LINE_BYTES].hex())
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return 0
