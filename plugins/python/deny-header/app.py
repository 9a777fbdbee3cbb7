"""deny-header: a tiny Sluice policy written in Python (built with componentize-py).

- A request carrying an `x-deny` header is answered `403 denied by python`.
- Any other request continues with the request header `x-python: yes` set.

With the configuration `{"probe": true}` the policy also tries, on every request, to
reach what a WASI guest could ask for (an environment variable, a file, a socket, the
clocks) and reports each outcome in the request header `x-python-probe`, so the gateway's
tests can check that the WASI context it links grants nothing real.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import types

PROBE_HEADER = "x-python-probe"


def _probe() -> str:
    """What the guest can reach, as `key=outcome` pairs separated by `;`."""
    import os
    import time

    out = []

    # Environment variables: the host passes none.
    env = dict(os.environ)
    out.append("env=%d" % len(env))
    out.append("path_var=%s" % ("set" if os.environ.get("PATH") is not None else "unset"))

    # Files: the host preopens no directory, so no path resolves.
    for name, path in (("file", "/etc/hostname"), ("root", "/")):
        try:
            if path.endswith("/"):
                os.listdir(path)
            else:
                with open(path, "rb") as f:
                    f.read(64)
            out.append("%s=open" % name)
        except OSError as e:
            out.append("%s=denied:%s" % (name, type(e).__name__))

    # Sockets: the host allows no TCP, UDP or name lookup. (componentize-py 0.25's
    # CPython has no `socket` module at all; the Rust `wasi-probe` fixture calls
    # wasi:sockets directly.)
    try:
        import socket
    except ImportError as e:
        out.append("socket=unavailable:%s" % type(e).__name__)
    else:
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.settimeout(1.0)
                s.connect(("127.0.0.1", 9))
                out.append("socket=connected")
            finally:
                s.close()
        except OSError as e:
            out.append("socket=denied:%s" % type(e).__name__)

    # Clocks: without the `clock` grant both WASI clocks are frozen at zero.
    out.append("wall=%d" % int(time.time()))
    a = time.monotonic_ns()
    advances = any(time.monotonic_ns() > a for _ in range(1000))
    out.append("mono=%d" % a)
    out.append("mono_advances=%s" % ("yes" if advances else "no"))

    # Randomness is not withheld: it reaches the guest.
    out.append("random=%d" % len(os.urandom(8)))
    return ";".join(out)


class WitWorld(wit_world.WitWorld):
    """The policy's exports."""

    probe = False

    def init(self, config: str) -> None:
        try:
            parsed = json.loads(config) if config else {}
        except ValueError as e:
            raise Err("config is not JSON: %s" % e)
        if not isinstance(parsed, dict):
            raise Err("config must be a table")
        unknown = set(parsed) - {"probe"}
        if unknown:
            raise Err("unknown config keys: %s" % ", ".join(sorted(unknown)))
        probe = parsed.get("probe", False)
        if not isinstance(probe, bool):
            raise Err("probe must be a boolean")
        WitWorld.probe = probe

    def on_request(self, req: types.RequestHead, ctx: types.Context) -> types.RequestDecision:
        if req.header("x-deny") is not None:
            return types.RequestDecision_Respond(
                types.LocalResponse(
                    status=403,
                    headers=[types.Header("content-type", b"text/plain")],
                    body=b"denied by python",
                )
            )
        headers = [types.Header("x-python", b"yes")]
        if WitWorld.probe:
            headers.append(types.Header(PROBE_HEADER, _probe().encode()))
        return types.RequestDecision_Edit(
            types.RequestEdits(
                set_headers=headers,
                append_headers=[],
                remove_headers=[],
                path=None,
                query=None,
            )
        )

    def on_response(
        self, req: types.RequestHead, resp: types.ResponseHead, ctx: types.Context
    ) -> types.ResponseDecision:
        return types.ResponseDecision_Continue()
