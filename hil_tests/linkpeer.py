"""One link end in a process of its own, for the restart tests: it echoes every message.

Usage: ``python hil_tests/linkpeer.py LINK``

Prints ``ready <pid>`` once its link runtime runs, then echoes each message
back on its channel, prefixed with ``<pid>:`` so that the other end can tell
this process from the one before it.  Runs until killed.
"""

from __future__ import annotations

import os
import sys
import time

from ira.link.events import LinkEvent, MessageReceived
from ira.runtime.link import LinkRuntime
from ira.transports import open_transport


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    tag = f"{os.getpid()}:".encode()

    def echo(event: LinkEvent) -> None:  # run with the core (the runtime's owner lock held)
        if isinstance(event, MessageReceived):
            runtime.core.send_message(tag + event.payload, event.channel)

    runtime = LinkRuntime(open_transport(argv[1]), on_event=echo)

    with runtime:
        print(f"ready {os.getpid()}", flush=True)
        while runtime.error is None:
            time.sleep(0.5)  # every event goes to echo; only a failure ends this
        runtime.raise_if_failed()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
