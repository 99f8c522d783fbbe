"""Watches over WebSocket against a skiff master, as Headlamp opens them.

Run by e2e/tests/e2e/watch_websocket.rs with the venv that
scripts/test-clients makes:

    python watch_websocket_scenario.py ADMIN_CONF NAMESPACE

The WebSocket client is websocket-client, the library the official
Kubernetes Python client depends on for its streams; it presents the admin
client certificate from ADMIN_CONF (read by the Kubernetes client's own
kubeconfig loader). The ConfigMaps are created, changed and deleted through
the Kubernetes client.

1. A watch from a list's resourceVersion, offering `base64.binary.k8s.io`
   (as Headlamp does): the subprotocol is answered; a ConfigMap created,
   patched and deleted arrives as ADDED, MODIFIED and DELETED, each one
   text message holding one JSON event (no base64, no channel byte); a
   ping is answered with a pong; the client's close is answered with a
   close, and the connection ends.
2. A WatchList watch of one ConfigMap through the `/watch/` path, with no
   subprotocol: none is answered; the ConfigMap ADDED, then the bookmark
   that ends the initial events.
3. `timeoutSeconds=1`: the server closes the socket by itself.
4. A bad field selector: refused before the upgrade, as a 400.

It prints a line per step and, on the first check that fails, what it saw;
then it exits 1.
"""

import json
import ssl
import sys
import time

import websocket
from kubernetes import client, config

# How long any one read may wait for the server.
READ_TIMEOUT = 20


def fail(message):
    print(f"FAILED: {message}", flush=True)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def step(message):
    print(f"ok: {message}", flush=True)


def open_watch(configuration, path, subprotocols=None):
    """A WebSocket to PATH on the master, with the admin certificate."""
    url = configuration.host.replace("https://", "wss://", 1) + path
    sslopt = {
        "cert_reqs": ssl.CERT_REQUIRED,
        "ca_certs": configuration.ssl_ca_cert,
        "certfile": configuration.cert_file,
        "keyfile": configuration.key_file,
    }
    return websocket.create_connection(
        url, timeout=READ_TIMEOUT, sslopt=sslopt, subprotocols=subprotocols
    )


def next_event(ws):
    """The next message: it must be a text message holding one JSON event."""
    frame = ws.recv_frame()
    check(
        frame.opcode == websocket.ABNF.OPCODE_TEXT,
        f"a watch event came as opcode {frame.opcode} ({frame.data!r}), not text",
    )
    text = frame.data.decode("utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        fail(f"a message is not one JSON event ({e}): {text!r}")


def expect_event(ws, kind, name, step_value=None):
    event = next_event(ws)
    obj = event.get("object", {})
    seen = (event.get("type"), obj.get("metadata", {}).get("name"))
    check(seen == (kind, name), f"expected {kind} {name}, got {seen}: {event}")
    if step_value is not None:
        data = obj.get("data", {})
        check(data.get("step") == step_value, f"{kind} {name} carries {data}")
    return event


def expect_server_close(ws, what):
    """The server's close frame arrives, then the connection ends."""
    frame = ws.recv_frame()
    check(
        frame.opcode == websocket.ABNF.OPCODE_CLOSE,
        f"{what}: expected the server's close, got opcode {frame.opcode} ({frame.data!r})",
    )
    code = int.from_bytes(frame.data[:2], "big") if len(frame.data) >= 2 else None
    check(code == 1000, f"{what}: the server closed with {code}, not 1000")
    try:
        more = ws.recv_frame()
        fail(f"{what}: a frame after the close: opcode {more.opcode} ({more.data!r})")
    except websocket.WebSocketTimeoutException:
        fail(f"{what}: the connection stayed open after the close")
    except (websocket.WebSocketConnectionClosedException, ssl.SSLError, OSError):
        pass
    ws.shutdown()


def main():
    if len(sys.argv) != 3:
        fail("usage: watch_websocket_scenario.py ADMIN_CONF NAMESPACE")
    kubeconfig, namespace = sys.argv[1:3]
    configuration = client.Configuration()
    config.load_kube_config(
        config_file=kubeconfig, client_configuration=configuration
    )
    core = client.CoreV1Api(client.ApiClient(configuration))
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    collection = f"/api/v1/namespaces/{namespace}/configmaps"

    # 1. Changes from a list's resourceVersion, as Headlamp asks for them.
    listed = core.list_namespaced_config_map(namespace)
    rv = listed.metadata.resource_version
    ws = open_watch(
        configuration,
        f"{collection}?watch=true&resourceVersion={rv}",
        subprotocols=["base64.binary.k8s.io"],
    )
    check(
        ws.getsubprotocol() == "base64.binary.k8s.io",
        f"the subprotocol answered is {ws.getsubprotocol()!r}",
    )
    step("upgraded, base64.binary.k8s.io answered")
    name = "ws-watched"
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data={"step": "one"}),
    )
    added = expect_event(ws, "ADDED", name, "one")
    core.patch_namespaced_config_map(name, namespace, {"data": {"step": "two"}})
    modified = expect_event(ws, "MODIFIED", name, "two")
    core.delete_namespaced_config_map(name, namespace)
    expect_event(ws, "DELETED", name)
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in (added, modified)]
    check(int(rv) < rvs[0] < rvs[1], f"resourceVersions {rv} then {rvs}")
    step("ADDED, MODIFIED, DELETED: one JSON text message each")
    ws.ping(b"still there")
    frame = ws.recv_frame()
    check(
        (frame.opcode, frame.data) == (websocket.ABNF.OPCODE_PONG, b"still there"),
        f"the ping was answered with opcode {frame.opcode} ({frame.data!r})",
    )
    step("ping answered")
    ws.send_close()
    expect_server_close(ws, "after the client's close")
    step("the client's close ends the watch")

    # 2. WatchList of one object through the /watch/ path, no subprotocol.
    kept = "ws-listed"
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name=kept), data={"step": "kept"}),
    )
    ws = open_watch(
        configuration,
        f"/api/v1/watch/namespaces/{namespace}/configmaps/{kept}"
        "?sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan",
    )
    check(ws.getsubprotocol() is None, f"a subprotocol answered unasked: {ws.getsubprotocol()!r}")
    expect_event(ws, "ADDED", kept, "kept")
    bookmark = next_event(ws)
    annotations = bookmark.get("object", {}).get("metadata", {}).get("annotations", {})
    check(
        bookmark.get("type") == "BOOKMARK"
        and annotations.get("k8s.io/initial-events-end") == "true",
        f"expected the initial-events-end bookmark, got {bookmark}",
    )
    step("WatchList through /watch/: ADDED, then the initial-events-end bookmark")
    ws.close()

    # 3. The watch's timeout closes the socket.
    started = time.monotonic()
    ws = open_watch(configuration, f"{collection}?watch=true&resourceVersion={rv}&timeoutSeconds=1")
    # The events since rv (ws-watched's three, ws-listed's ADDED) come first.
    seen = [next_event(ws)["type"] for _ in range(4)]
    check(seen == ["ADDED", "MODIFIED", "DELETED", "ADDED"], f"replayed {seen}")
    expect_server_close(ws, "after timeoutSeconds=1")
    took = time.monotonic() - started
    check(took < READ_TIMEOUT, f"the timed-out watch took {took:.1f}s to close")
    step(f"timeoutSeconds=1 closed the socket after {took:.1f}s")

    # 4. A refusal comes before the upgrade, as a plain Status.
    try:
        ws = open_watch(configuration, f"{collection}?watch=true&fieldSelector=spec.nothing%3Dx")
        fail(f"a watch with a bad field selector was upgraded ({ws.getstatus()})")
    except websocket.WebSocketBadStatusException as e:
        check(e.status_code == 400, f"a bad field selector answered {e.status_code}")
    step("a bad field selector is a 400 before the upgrade")

    print("PASSED", flush=True)


if __name__ == "__main__":
    main()
