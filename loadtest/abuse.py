#!/usr/bin/env python3
"""Resource-exhaustion measurements against a Sluice binary (release builds: the figures in
docs/benchmarks.md), each attack once, with what it cost and what the server answered.

    cargo build --release && python3 loadtest/abuse.py --binary target/release/sluice

Runs the binary on its embedded default (file sink, SQLite registry) in a temporary folder with
the repository's schemas, on 127.0.0.1. Standard library only. Every wait is bounded (--patience,
default 30 s): an attack the server does not answer in time is reported as such and the server
is restarted for the next one.
"""

import argparse
import gzip
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Settings from --env, for every server.
EXTRA: dict = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, binary: str, env: dict):
        self.dir = tempfile.mkdtemp(prefix="sluice-abuse-")
        shutil.copytree(ROOT / "schemas", Path(self.dir) / "schemas")
        self.port = free_port()
        e = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
        e.update({"SLUICE_SERVER__LISTEN": f"127.0.0.1:{self.port}", "RUST_LOG": "error"}, **EXTRA, **env)
        self.proc = subprocess.Popen([binary, "serve"], cwd=self.dir, env=e,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if self.request("GET", "/readyz", timeout=1)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit("the server did not become ready")

    def request(self, method, path, body=None, headers=None, timeout=30.0):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def rss_kib(self, field="VmHWM") -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return 0

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def doubling(depth: int, leaf: dict) -> dict:
    defs = {"l0": leaf}
    for i in range(1, depth + 1):
        below = {"$ref": f"#/$defs/l{i - 1}"}
        defs[f"l{i}"] = {"allOf": [below, below]}
    return {"$defs": defs, "$ref": f"#/$defs/l{depth}"}


SR = {"content-type": "application/vnd.schemaregistry.v1+json"}


def schema_req(schema: dict) -> str:
    return json.dumps({"schema": json.dumps(schema), "schemaType": "JSON"})


def timed(f):
    t = time.monotonic()
    try:
        out = f()
    except (OSError, http.client.HTTPException) as e:
        out = (None, repr(e).encode())
    return out, time.monotonic() - t


def healthz_during(s: Server, stop: threading.Event, worst: list):
    while not stop.is_set():
        (st, _), t = timed(lambda: s.request("GET", "/healthz", timeout=5))
        worst[0] = max(worst[0], t if st == 200 else float("inf"))
        time.sleep(0.05)


def compat_attack(binary, patience):
    s = Server(binary, {})
    try:
        subj = "abuse.compat"
        (v1, _), _ = timed(lambda: s.request("POST", f"/subjects/{subj}/versions",
                                             schema_req(doubling(20, {"type": "object"})), SR, timeout=patience))
        (st, body), t = timed(lambda: s.request(
            "POST", f"/compatibility/subjects/{subj}/versions/latest?verbose=true",
            schema_req(doubling(20, {"type": ["object", "null"]})), SR, timeout=patience))
        return (f"register a 20-level allOf doubling: {v1}; compatibility check of the next: "
                f"{st if st else 'no answer'} in {t:.2f} s")
    finally:
        s.stop()


def register_32(binary, patience):
    s = Server(binary, {})
    try:
        subj = "abuse.compat32"
        s.request("POST", f"/subjects/{subj}/versions", schema_req(doubling(32, {"type": "object"})), SR,
                  timeout=patience)
        stop, worst = threading.Event(), [0.0]
        h = threading.Thread(target=healthz_during, args=(s, stop, worst))
        h.start()
        (st, body), t = timed(lambda: s.request(
            "POST", f"/subjects/{subj}/versions", schema_req(doubling(32, {"type": ["object", "null"]})), SR,
            timeout=patience))
        stop.set()
        h.join()
        answer = f"{st} after {t:.2f} s" if st else f"no answer in {patience:.0f} s"
        health = "no answer" if worst[0] == float("inf") else f"worst {worst[0] * 1000:.0f} ms"
        return f"register a 32-level doubling over a registered one: {answer}; /healthz meanwhile: {health}"
    finally:
        s.stop()


def validation_bomb(binary, patience):
    s = Server(binary, {})
    try:
        subj = "abuse.validate"
        s.request("PUT", f"/config/{subj}", json.dumps({"compatibility": "NONE"}), SR)
        st, body = s.request("POST", f"/subjects/{subj}/versions", schema_req(doubling(26, {"type": "object"})), SR,
                             timeout=patience)
        if st != 200:
            return f"register a 26-level allOf doubling: {st} {json.loads(body).get('message', '')[:90]}"
        ev = json.dumps({"type": subj, "data": {}})
        (st, _), t = timed(lambda: s.request("POST", "/v1/events", ev, {"content-type": "application/cloudevents+json"},
                                             timeout=patience))
        return f"26-level doubling registered; one 40-byte event: {st or 'no answer'} after {t:.2f} s"
    finally:
        s.stop()


def gzip_bombs(binary, patience):
    s = Server(binary, {})
    try:
        body = gzip.compress(b"[" + b"0," * (10_000_000 - 1) + b"0]", 9)
        base = s.rss_kib()
        results = []

        def one():
            results.append(timed(lambda: s.request(
                "POST", "/v1/events", body, {"content-type": "application/cloudevents-batch+json",
                                             "content-encoding": "gzip"}, timeout=patience)))
        threads = [threading.Thread(target=one) for _ in range(8)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.monotonic() - t0
        statuses = sorted(str(r[0][0]) for r in results)
        return (f"8 x {len(body) // 1024} KiB gzip -> 20 MiB `[0,0,...]`: {', '.join(statuses)} in {took:.2f} s; "
                f"peak RSS {base // 1024} -> {s.rss_kib() // 1024} MiB")
    finally:
        s.stop()


def slowloris(binary, patience):
    s = Server(binary, {})
    try:
        c = socket.create_connection(("127.0.0.1", s.port))
        c.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n")
        c.settimeout(patience)
        t = time.monotonic()
        try:
            closed = c.recv(1) == b""
        except socket.timeout:
            closed = False
        except OSError:
            closed = True
        took = time.monotonic() - t
        c.close()
        return f"half a request head: {'closed after %.1f s' % took if closed else 'still open after %.0f s' % patience}"
    finally:
        s.stop()


def spoof_and_csrf(binary, patience):
    s = Server(binary, {})
    try:
        ev = json.dumps({"type": "app.signup", "sluicetenant": "other", "data": {"user_id": "u", "plan": "free"}})
        st1, _ = s.request("POST", "/v1/events", ev, {"content-type": "application/cloudevents+json"})
        st2, _ = s.request("POST", "/subjects/app.signup/versions", schema_req({}), {})
        return f"event claiming `sluicetenant`: {st1}; schema write without Content-Type: {st2}"
    finally:
        s.stop()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--binary", required=True)
    p.add_argument("--patience", type=float, default=30.0)
    p.add_argument("--env", action="append", default=[], metavar="SLUICE_X__Y=V",
                   help="a setting for every server started (repeatable)")
    p.add_argument("--only", action="append", default=[], help="run only this attack (repeatable)")
    a = p.parse_args()
    EXTRA.update(kv.split("=", 1) for kv in a.env)
    for f in (compat_attack, register_32, validation_bomb, gzip_bombs, slowloris, spoof_and_csrf):
        if a.only and f.__name__ not in a.only:
            continue
        print(f"{f.__name__}: {f(a.binary, a.patience)}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
