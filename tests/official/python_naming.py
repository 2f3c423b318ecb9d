"""Drive the official nacos-sdk-python 2.0.x naming calls against a server; print what it saw as JSON.

add_naming_instance (with its heartbeat thread), list_naming_instance, send_heartbeat, remove_naming_instance.
Run in its own process by tests/test_official_clients.py.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

import nacos


def main(address: str, workdir: str) -> dict[str, Any]:
    os.chdir(workdir)
    logging.getLogger("nacos").setLevel(logging.CRITICAL)
    out: dict[str, Any] = {}
    client = nacos.NacosClient(address, username="nacos", password="nacos", logDir=workdir)
    out["register"] = client.add_naming_instance("py-svc", "10.2.0.1", 8080, cluster_name="DEFAULT",
                                                 metadata={"lang": "py"}, heartbeat_interval=0.2)
    time.sleep(1.0)  # a few beats from the client's heartbeat thread
    listed = client.list_naming_instance("py-svc")
    out["listed"] = [[h["ip"], h["port"], h["healthy"], h["metadata"]] for h in listed["hosts"]]
    out["listed_name"] = listed["name"]
    beat = client.send_heartbeat("py-svc", "10.2.0.1", 8080, cluster_name="DEFAULT")
    out["beat"] = beat
    out["remove"] = client.remove_naming_instance("py-svc", "10.2.0.1", 8080, cluster_name="DEFAULT")
    for task in client.heartbeats.values():
        task.stop()
    out["listed_after_remove"] = len(client.list_naming_instance("py-svc")["hosts"])
    return out


if __name__ == "__main__":
    result = main(sys.argv[1], sys.argv[2])
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)
