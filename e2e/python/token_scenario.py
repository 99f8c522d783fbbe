"""A pod's service account token, used the way in-cluster code uses it.

Run by e2e/tests/e2e/python_token.rs with the venv that scripts/test-clients
makes, on a copy of a running pod's
/var/run/secrets/kubernetes.io/serviceaccount (`token`, `ca.crt`,
`namespace`) and with KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT
naming the API server:

    python token_scenario.py refused ACCOUNT_DIR ACCOUNT
    python token_scenario.py allowed ACCOUNT_DIR ACCOUNT OTHER_NAMESPACE

The configuration is what `kubernetes.config.load_incluster_config()` loads,
from ACCOUNT_DIR instead of the pod's path: the official client's
`InClusterConfigLoader` with the token and CA files. The namespace is the
one in ACCOUNT_DIR's `namespace` file; ACCOUNT is the service account the
token belongs to (its user is `system:serviceaccount:NAMESPACE:ACCOUNT`).

`refused`: listing the namespace's pods is refused with kube-apiserver's
403 and its sentence; prints `refused: <message>`.

`allowed`: listing the namespace's pods succeeds (retried while it is still
refused, until the Role and RoleBinding are honoured); prints `listed: <name>`
per pod. Then listing OTHER_NAMESPACE's pods is refused as above.

Prints PASSED at the end. On anything unexpected it prints `FAILED: ...`
saying what it saw and exits 1.
"""

import json
import os
import sys
import time
import traceback

from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.config.incluster_config import InClusterConfigLoader

# Seconds a new RoleBinding may take to be honoured.
SETTLE = 60
# Seconds one request may take.
REQUEST_TIMEOUT = 15


def fail(message):
    print(f"FAILED: {message}", flush=True)
    sys.exit(1)


def load(account_dir):
    """Configures the client as in-cluster code is configured; answers the
    namespace named in ACCOUNT_DIR."""
    for name in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        if not os.environ.get(name):
            fail(f"{name} is not set in the environment")
    files = {name: os.path.join(account_dir, name) for name in ("token", "ca.crt", "namespace")}
    for name, path in files.items():
        if not os.path.isfile(path):
            fail(f"no {name} file at {path}")
    InClusterConfigLoader(
        token_filename=files["token"],
        cert_filename=files["ca.crt"],
    ).load_and_set()
    with open(files["namespace"]) as f:
        namespace = f.read()
    # As Kubernetes writes it: the name alone, no newline.
    if not namespace or namespace != namespace.strip():
        fail(f"the namespace file {files['namespace']} holds {namespace!r}")
    return namespace


def forbidden_sentence(user, namespace):
    """kube-apiserver's message refusing `user` a list of pods in `namespace`."""
    return (
        f'pods is forbidden: User "{user}" cannot list resource "pods" '
        f'in API group "" in the namespace "{namespace}"'
    )


def list_pods(core, namespace):
    return core.list_namespaced_pod(namespace, _request_timeout=REQUEST_TIMEOUT)


def refusal_message(error, user, namespace):
    """The message of `error` if it is kube-apiserver's refusal of `user`
    listing pods in `namespace`; fails saying what it is otherwise."""
    if error.status != 403:
        fail(f"listing pods in {namespace}: status {error.status}, not 403: {error.body}")
    try:
        status = json.loads(error.body or "")
    except ValueError:
        fail(f"listing pods in {namespace}: a 403 whose body is not JSON: {error.body!r}")
    seen = {key: status.get(key) for key in ("kind", "status", "reason", "code")}
    wanted = {"kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403}
    if seen != wanted:
        fail(f"listing pods in {namespace}: a 403 Status with {seen}, not {wanted}: {error.body}")
    expected = forbidden_sentence(user, namespace)
    if status.get("message") != expected:
        fail(
            f"listing pods in {namespace}: refused with {status.get('message')!r}, "
            f"not {expected!r}"
        )
    return expected


def refused(core, user, namespace):
    """Lists `namespace`'s pods, which must be refused; prints the refusal."""
    try:
        pods = list_pods(core, namespace)
    except ApiException as e:
        message = refusal_message(e, user, namespace)
        print(f"refused: {message}", flush=True)
        return
    names = [p.metadata.name for p in pods.items]
    fail(f"listing pods in {namespace} as {user} was allowed: {names}")


def allowed(core, user, namespace):
    """Lists `namespace`'s pods, retrying while the refusal stands (a new
    RoleBinding is honoured within SETTLE seconds); prints their names."""
    deadline = time.monotonic() + SETTLE
    while True:
        try:
            pods = list_pods(core, namespace)
            break
        except ApiException as e:
            # Only the refusal is worth waiting out; anything else fails here.
            message = refusal_message(e, user, namespace)
            if time.monotonic() >= deadline:
                fail(f"listing pods in {namespace} still refused after {SETTLE}s: {message}")
            time.sleep(0.5)
    if pods.kind not in (None, "PodList"):
        fail(f"listing pods in {namespace} answered a {pods.kind}")
    for pod in pods.items:
        if pod.metadata.namespace != namespace:
            fail(f"pod {pod.metadata.name} of namespace {pod.metadata.namespace} listed in {namespace}")
        print(f"listed: {pod.metadata.name}", flush=True)


def main():
    usage = (
        "usage: token_scenario.py refused ACCOUNT_DIR ACCOUNT\n"
        "       token_scenario.py allowed ACCOUNT_DIR ACCOUNT OTHER_NAMESPACE"
    )
    args = sys.argv[1:]
    if not args or (args[0], len(args)) not in (("refused", 3), ("allowed", 4)):
        fail(f"arguments {args}\n{usage}")
    phase, account_dir, account = args[0], args[1], args[2]
    namespace = load(account_dir)
    user = f"system:serviceaccount:{namespace}:{account}"
    core = client.CoreV1Api()
    if phase == "refused":
        refused(core, user, namespace)
    else:
        other = args[3]
        if other == namespace:
            fail(f"OTHER_NAMESPACE {other} is the account's own namespace")
        allowed(core, user, namespace)
        refused(core, user, other)
    print("PASSED", flush=True)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - anything unexpected, said clearly
        traceback.print_exc()
        fail(f"unexpected {type(e).__name__}: {e}")
