"""Start a real Mosquitto broker for a test from a config text, on a port the test chose."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.net import port_open, stop_process, wait_for

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


@dataclass
class Broker:
    config_path: Path
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        stop_process(self.process)

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads its config (and, for TLS listeners, CRL and certs)."""
        self.process.send_signal(1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start_broker(config_text: str, port: int, workdir: Path, *, name: str = "broker") -> Broker:
    """Write ``config_text`` to ``workdir/<name>.conf`` and run Mosquitto on it until ``port``
    accepts connections. The caller's config must open a listener on ``port``."""
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / f"{name}.conf"
    log = workdir / f"{name}.log"
    conf.write_text(config_text)
    with log.open("wb") as out:
        proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    broker = Broker(conf, port, proc, log)
    try:
        wait_for(
            lambda: proc.poll() is not None or port_open(port),
            timeout_s=20,
            what=f"{name} on :{port}",
        )
        if proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {proc.returncode}:\n{broker.log()}")
    except BaseException:
        broker.stop()
        raise
    return broker
