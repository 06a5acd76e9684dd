"""A writer process for the crash test: appends in a burst from several threads and prints
``ack <index>`` (flushed) after each `record` returns, until it is killed."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from audit.events import AuditEvent, Outcome
from audit.log import AuditLog

ORIGIN = "plant1.example/idmz-audit"


def main() -> None:
    directory, writer = Path(sys.argv[1]), sys.argv[2]
    log = AuditLog.open(directory, origin=ORIGIN)
    out_lock = threading.Lock()
    print("ready", flush=True)

    def burst(thread: int) -> None:
        n = 0
        while True:
            event = AuditEvent(
                "operator-crash-test", "operator.burst", f"{writer}/{thread}/{n}",
                Outcome.SUCCESS, "crash test burst", details={"writer": writer},
            )  # fmt: skip
            receipt = log.record(event)
            with out_lock:
                sys.stdout.write(f"ack {receipt.index} {writer}/{thread}/{n}\n")
                sys.stdout.flush()
            n += 1

    threads = [threading.Thread(target=burst, args=(t,), daemon=True) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
