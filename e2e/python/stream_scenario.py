"""The official Kubernetes Python client's streams against a skiff master.

Run by e2e/tests/kubectl_exec.rs with the venv that scripts/test-clients
makes, on a pod that serves PAGE with httpd on 8080:

    python stream_scenario.py ADMIN_CONF NAMESPACE POD PAGE

`stream` exec (WebSocket, `v4.channel.k8s.io`): stdout and the exit code
from the error channel's Status; stdin written and closed; then
`portforward` to 8080 (channel 0 data, channel 1 errors, each opened by
the port number) fetching PAGE. It prints a line per step and, on the
first check that fails, what it saw; then it exits 1.
"""

import sys

from kubernetes import client, config
from kubernetes.stream import portforward, stream


def fail(message):
    print(f"FAILED: {message}", flush=True)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def step(message):
    print(f"ok: {message}", flush=True)


def main():
    if len(sys.argv) != 5:
        fail("usage: stream_scenario.py ADMIN_CONF NAMESPACE POD PAGE")
    kubeconfig, namespace, pod, page = sys.argv[1:5]
    config.load_kube_config(config_file=kubeconfig)
    core = client.CoreV1Api()

    ws = stream(
        core.connect_get_namespaced_pod_exec,
        pod,
        namespace,
        command=["sh", "-c", "echo from-python; exit 4"],
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
        _preload_content=False,
    )
    ws.run_forever(timeout=30)
    out = ws.read_stdout()
    check(out == "from-python\n", f"exec stdout {out!r}")
    check(ws.returncode == 4, f"exec exit code {ws.returncode!r}")
    ws.close()
    step("exec: stdout and exit code 4")

    ws = stream(
        core.connect_get_namespaced_pod_exec,
        pod,
        namespace,
        command=["cat"],
        stderr=True,
        stdin=True,
        stdout=True,
        tty=False,
        _preload_content=False,
    )
    ws.write_stdin("to cat and back\n")
    seen = ""
    for _ in range(100):
        ws.update(timeout=0.2)
        seen += ws.read_stdout(timeout=0.1) or ""
        if seen:
            break
    check(seen == "to cat and back\n", f"cat echoed {seen!r}")
    ws.close()
    step("exec: stdin")

    pf = portforward(
        core.connect_get_namespaced_pod_portforward, pod, namespace, ports="8080"
    )
    sock = pf.socket(8080)
    sock.setblocking(True)
    sock.sendall(b"GET /index.html HTTP/1.0\r\nHost: pod\r\n\r\n")
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    sock.close()
    check(page.encode() in data, f"port-forward answer {data!r}")
    error = pf.error(8080)
    check(not error, f"port-forward error {error!r}")
    pf.close()
    step("port-forward: the page")

    print("PASSED", flush=True)


if __name__ == "__main__":
    main()
