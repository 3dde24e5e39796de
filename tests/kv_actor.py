"""An application process using the coordination service, driven by a test.

``python tests/kv_actor.py CLUSTER_FILE NAME TTL_MS`` reads one JSON request per line
on stdin and prints one JSON answer per line on stdout (flushed):

* ``{"op": "lock", "name": N}`` -> ``{"locked": N, "token": T}`` (waits for the grant)
* ``{"op": "campaign", "name": N, "identity": I}`` -> ``{"elected": N, "term": T}``
* ``{"op": "put", "key": K, "value": V, "fence": [N, T] | null}`` ->
  ``{"put": K, "version": V}`` or ``{"refused": reason}``
* ``{"op": "session"}`` -> ``{"session": S, "lost": bool}``

A test can SIGSTOP it (a GC pause, a VM migration) and SIGKILL it (a crash): its
session is renewed by the client's own thread, which stops with it.
"""

from __future__ import annotations

import json
import sys

from broadcast.kv import KvClient, Refused


def main() -> None:
    cluster, name, ttl_ms = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with KvClient(cluster, name=name, ttl_ms=ttl_ms, timeout=60) as kv:
        for line in sys.stdin:
            request = json.loads(line)
            op = request["op"]
            answer: dict[str, object]
            if op == "lock":
                lock = kv.lock(request["name"])
                answer = {"locked": lock.name, "token": lock.token}
            elif op == "campaign":
                election = kv.election(request["name"], request["identity"].encode())
                answer = {"elected": election.name, "term": election.campaign()}
            elif op == "put":
                fence = request.get("fence")
                try:
                    version = kv.put(
                        request["key"],
                        request["value"].encode(),
                        fence=(fence[0], fence[1]) if fence else None,
                    )
                    answer = {"put": request["key"], "version": version}
                except Refused as exc:
                    answer = {"refused": exc.reason, "index": exc.index}
            elif op == "session":
                answer = {"session": kv.session, "lost": kv.lost}
            else:
                answer = {"error": f"unknown op {op!r}"}
            print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
