"""virtio benchmark: notifications per buffer under sustained load, EVENT_IDX against none.

A board (``BoardService`` with a ``virtio-rng`` device) and a host
(``HostClient``) run in this process over one unthrottled virtual null-modem.
The host reads BYTES random bytes through the device's request queue (16
chains of 64 bytes kept in flight: as each batch of used buffers comes back
the driver refills and kicks), so the queue never runs dry.

A second load, *trickled*, takes the other extreme: the device publishes
(and notifies) each buffer as soon as it has filled it, and the driver adds
and kicks each buffer on its own, so every buffer is a notification
opportunity on both sides.

Each load runs twice per round, in the same process: once with
VIRTIO_F_EVENT_IDX negotiated, once with the host's feature policy masking it
(the baseline: the rings fall back to the NO_NOTIFY/NO_INTERRUPT flags).
Figures, all per buffer used by the device:

* ``signals_per_buffer``: bus SIGNAL messages, host → board (available-buffer
  notifications) plus board → host (used-buffer notifications), counted by
  the bus cores; ``kicks_per_buffer`` and ``interrupts_per_buffer`` split them;
* ``ring_notifies_per_buffer``: the notifications the rings themselves asked
  for (``publish()``'s decision: ``vring_need_event`` with EVENT_IDX, the
  flags without), driver kicks plus device interrupts.  The transport counts
  these but does not act on them: over a link each side reads the peer's
  ``avail_event``/``used_event`` from a replica that may lag, so a decision
  not to notify can be a lost wake-up (see docs/ARCHITECTURE.md, virtio);
  the bus signal suppresses instead (at most one SIGNAL in flight);
* ``..._ratio``: the EVENT_IDX figure divided by the baseline's.

Keys are ``<load>_<event_idx|baseline>_<figure>`` and ``<load>_<figure>_ratio``
for the loads ``batched`` and ``trickled``.

Usage: ``python bench/virtio.py [--json] [--quick] [--bytes N] [--rounds N]``
"""

from __future__ import annotations

import argparse
import json
import random
import time

from ira import native
from ira.cli.virtio import entropy_binding, read_entropy
from ira.runtime import BoardService, HostClient
from ira.runtime.profile import DeviceSpec, Profile
from ira.tools.nullmodem import NullModem, NullModemConfig
from ira.virtio.device import VirtqueueDevice
from ira.virtio.driver import UsedBuffer
from ira.virtio.entropy import CHUNK_BYTES, ENTROPY_ID, Entropy, EntropyClient
from ira.virtio.features import Feature, FeaturePolicy
from ira.virtio.host import VirtioBinding
from ira.wire.bus import SignalNotify

PROFILE = Profile("bench", (DeviceSpec("virtio-rng", "virtio-rng", (("seed", 1),)),))
#: the trickled load's board: the device is added by hand
EMPTY = Profile("bench", ())
#: the baseline's policy: everything but EVENT_IDX
NO_EVENT_IDX = FeaturePolicy(allowed=~Feature.EVENT_IDX.mask)
#: how long one read may take
WAIT_S = 120.0


class TricklingEntropy(Entropy):
    """An entropy device that publishes and notifies each buffer as soon as it is filled."""

    def queue_notified(self, index: int, queue: VirtqueueDevice) -> None:
        while (chain := queue.pop()) is not None:
            data = self.rng.randbytes(chain.writable_bytes)
            queue.write(chain, data)
            queue.push(chain, len(data))
            self.interrupt(index)


class TricklingClient(EntropyClient):
    """An entropy driver that adds and kicks each buffer on its own."""

    def used(self, binding: VirtioBinding, index: int, used: list[UsedBuffer[object]]) -> None:
        for u in used:  # one buffer back, one buffer added and kicked
            super().used(binding, index, [u])


def _device(board: BoardService) -> Entropy:
    device = board.call(lambda c: next(iter(c.devices().values())))
    assert isinstance(device, Entropy)
    return device


def _counts(board: BoardService, host: HostClient) -> dict[str, int]:
    """The counters the figures are made of, read on each side's loop thread."""
    device = _device(board)
    dev = board.call(lambda c: device.statistics())
    binding = entropy_binding(host, timeout_s=WAIT_S)
    drv = host.runtime.call(lambda: binding.queues[0].statistics())
    queue = dev.queues[0] if dev.queues else None
    return {
        "buffers": 0 if queue is None else queue.chains_pushed,
        "kick_signals": host.statistics().sent.get(SignalNotify, 0),
        "interrupt_signals": board.statistics().sent.get(SignalNotify, 0),
        "ring_kicks": drv.kicks,
        "ring_kicks_suppressed": drv.kicks_suppressed,
        "ring_interrupts": dev.virtio_notify,
        "ring_interrupts_suppressed": dev.virtio_notify_suppressed,
    }


def measure(size_bytes: int, *, event_idx: bool, trickled: bool) -> dict[str, float]:
    """One sustained read of ``size_bytes``; counters are taken around it (after a warm-up)."""
    policy = None if event_idx else NO_EVENT_IDX
    clients = {ENTROPY_ID: TricklingClient} if trickled else None
    with (
        NullModem(NullModemConfig()) as nm,
        BoardService(nm.path_a, EMPTY if trickled else PROFILE) as board,
        HostClient(nm.path_b, virtio_policy=policy, virtio_clients=clients) as host,
    ):
        if trickled:
            device = TricklingEntropy(random.Random(1))
            board.call(lambda c: c.add_device(device, now=time.monotonic()))
        read_entropy(host, 16 * CHUNK_BYTES, timeout_s=WAIT_S)  # initialise and warm up
        negotiated = host.virtio_devices()[0].negotiation
        assert negotiated is not None
        if bool(negotiated.accepted & Feature.EVENT_IDX.mask) != event_idx:
            raise SystemExit(f"EVENT_IDX negotiation is not what the run needs: {negotiated}")
        before = _counts(board, host)
        start = time.perf_counter()
        read_entropy(host, size_bytes, timeout_s=WAIT_S)
        elapsed = time.perf_counter() - start
        after = _counts(board, host)
    delta = {key: float(after[key] - before[key]) for key in after}
    delta["seconds"] = elapsed
    return delta


def figures(total: dict[str, float]) -> dict[str, float]:
    buffers = total["buffers"]
    signals = total["kick_signals"] + total["interrupt_signals"]
    ring = total["ring_kicks"] + total["ring_interrupts"]
    return {
        "buffers": buffers,
        "bytes_per_s": buffers * CHUNK_BYTES / total["seconds"],
        "signals_per_buffer": signals / buffers,
        "kicks_per_buffer": total["kick_signals"] / buffers,
        "interrupts_per_buffer": total["interrupt_signals"] / buffers,
        "ring_notifies_per_buffer": ring / buffers,
        "ring_kicks_per_buffer": total["ring_kicks"] / buffers,
        "ring_interrupts_per_buffer": total["ring_interrupts"] / buffers,
    }


LOADS = {"batched": False, "trickled": True}


def run(size_bytes: int, rounds: int) -> dict[str, float]:
    results: dict[str, float] = {"bytes_per_read": float(size_bytes), "rounds": float(rounds)}
    for load, trickled in LOADS.items():
        totals: dict[bool, dict[str, float]] = {True: {}, False: {}}
        for _ in range(rounds):
            for event_idx in (True, False):  # interleaved, so machine load hits both alike
                measured = measure(size_bytes, event_idx=event_idx, trickled=trickled)
                for key, value in measured.items():
                    totals[event_idx][key] = totals[event_idx].get(key, 0.0) + value
        with_idx, baseline = figures(totals[True]), figures(totals[False])
        results |= {f"{load}_event_idx_{k}": v for k, v in with_idx.items()}
        results |= {f"{load}_baseline_{k}": v for k, v in baseline.items()}
        for key in ("signals_per_buffer", "ring_notifies_per_buffer", "bytes_per_s"):
            results[f"{load}_{key}_ratio"] = with_idx[key] / baseline[key]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a quarter of the bytes, one round")
    parser.add_argument("--bytes", type=int, default=1 << 20, help="bytes per read (1 MiB)")
    parser.add_argument("--rounds", type=int, default=3, help="reads per configuration")
    args = parser.parse_args()
    size, rounds = (args.bytes // 4, 1) if args.quick else (args.bytes, args.rounds)
    r = run(size, rounds)
    if args.json:
        # which build of the hot modules ran: compiled or pure Python (ira.native)
        print(json.dumps({**r, "build": native.status()}, sort_keys=True))
        return
    print(f"build: {native.status()}")
    for load in LOADS:
        for config, label in (("event_idx", "EVENT_IDX"), ("baseline", "no EVENT_IDX")):
            name = f"{load}_{config}"
            print(
                f"{load:>8} {label:>12}: {r[f'{name}_buffers']:.0f} buffers, "
                f"{r[f'{name}_signals_per_buffer']:.3f} SIGNALs per buffer "
                f"({r[f'{name}_kicks_per_buffer']:.3f} kicks + "
                f"{r[f'{name}_interrupts_per_buffer']:.3f} interrupts); the rings asked for "
                f"{r[f'{name}_ring_notifies_per_buffer']:.3f}; "
                f"{r[f'{name}_bytes_per_s'] / 1e3:.0f} kB/s"
            )
        print(
            f"{load:>8} EVENT_IDX / baseline: SIGNALs {r[f'{load}_signals_per_buffer_ratio']:.2f}, "
            f"ring notifications {r[f'{load}_ring_notifies_per_buffer_ratio']:.2f}, "
            f"throughput {r[f'{load}_bytes_per_s_ratio']:.2f}"
        )


if __name__ == "__main__":
    main()
