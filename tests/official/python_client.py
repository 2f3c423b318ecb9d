"""Drive the official nacos-sdk-python 2.0.x client against a server; print what it saw as JSON.

Run in its own process by tests/test_official_clients.py: the client starts a multiprocessing Manager and puller
threads, and ending the process is the only reliable way to end them.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from typing import Any

import nacos


def main(address: str, workdir: str) -> dict[str, Any]:
    os.chdir(workdir)  # snapshots and failover files are written below the working directory
    logging.getLogger("nacos").setLevel(logging.CRITICAL)
    out: dict[str, Any] = {}
    client = nacos.NacosClient(address, username="nacos", password="nacos", logDir=workdir)
    client.no_snapshot = True
    out["publish"] = client.publish_config("py.yaml", "DEFAULT_GROUP", "v1")
    out["get"] = client.get_config("py.yaml", "DEFAULT_GROUP")

    dev = nacos.NacosClient(address, namespace="dev", username="nacos", password="nacos", logDir=workdir)
    dev.no_snapshot = True
    out["dev_publish"] = dev.publish_config("py.yaml", "DEFAULT_GROUP", "dev-v1")
    out["dev_get"] = dev.get_config("py.yaml", "DEFAULT_GROUP")
    out["public_get_after_dev_publish"] = client.get_config("py.yaml", "DEFAULT_GROUP")

    seen: list[str] = []
    changed = threading.Event()

    def on_change(params: dict[str, Any]) -> None:
        seen.append(params["content"])
        if params["content"] == "v2":
            changed.set()

    client.add_config_watcher("py.yaml", "DEFAULT_GROUP", on_change)
    dev_seen = threading.Event()
    dev.add_config_watcher("py.yaml", "DEFAULT_GROUP",
                           lambda params: dev_seen.set() if params["content"] == "dev-v2" else None)
    time.sleep(2.5)  # let both pullers settle into a held long poll
    started = time.monotonic()
    client.publish_config("py.yaml", "DEFAULT_GROUP", "v2")
    dev.publish_config("py.yaml", "DEFAULT_GROUP", "dev-v2")
    out["watcher_saw_change"] = changed.wait(20)
    out["watcher_seconds"] = round(time.monotonic() - started, 2)
    out["dev_watcher_saw_change"] = dev_seen.wait(20)
    out["watcher_contents"] = seen

    out["remove"] = client.remove_config("py.yaml", "DEFAULT_GROUP")
    out["get_after_remove"] = client.get_config("py.yaml", "DEFAULT_GROUP")
    try:
        nacos.NacosClient(address, username="nacos", password="wrong", logDir=workdir)
        out["wrong_password"] = "accepted"
    except Exception as exc:
        out["wrong_password"] = type(exc).__name__
    for c in (client, dev):
        if c.process_mgr is not None:
            c.process_mgr.shutdown()
    return out


if __name__ == "__main__":
    result = main(sys.argv[1], sys.argv[2])
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)
