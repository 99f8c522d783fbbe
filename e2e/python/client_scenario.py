"""The official Kubernetes Python client against a skiff master's REST API.

Run by e2e/tests/python_client.rs with the venv that scripts/test-clients
makes:

    python client_scenario.py ADMIN_CONF NAMESPACE NODES

It reads the server version, lists the NODES nodes (all Ready), creates
NAMESPACE and a Deployment in it, lists Deployments by label, watches the
Deployment's pods arrive, patches a label (strategic merge patch), scales
through the scale subresource, reads a missing pod (404 NotFound) and
deletes the Deployment. It prints a line per step and, on the first check
that fails, what it saw; then it exits 1.
"""

import json
import sys
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

# Seconds anything asynchronous (pods Running, a rollout) may take.
SETTLE = 30


def fail(message):
    print(f"FAILED: {message}", flush=True)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def step(message):
    print(f"ok: {message}", flush=True)


def eventually(what, probe, timeout=SETTLE):
    """Calls probe() until its first value is true; returns its second.

    probe() returns (done, seen); `seen` is shown if time runs out.
    """
    deadline = time.monotonic() + timeout
    while True:
        done, seen = probe()
        if done:
            return seen
        if time.monotonic() >= deadline:
            fail(f"timed out after {timeout}s waiting for {what}; last seen: {seen!r}")
        time.sleep(0.2)


def not_found(call):
    """Whether call() fails with HTTP 404 and a Status whose reason is NotFound."""
    try:
        call()
    except ApiException as e:
        if e.status != 404:
            return False
        try:
            return json.loads(e.body or "{}").get("reason") == "NotFound"
        except ValueError:
            return False
    return False


def main():
    if len(sys.argv) != 4:
        fail("usage: client_scenario.py ADMIN_CONF NAMESPACE NODES")
    kubeconfig, namespace, nodes = sys.argv[1], sys.argv[2], int(sys.argv[3])
    config.load_kube_config(config_file=kubeconfig)
    core = client.CoreV1Api()
    apps = client.AppsV1Api()

    version = client.VersionApi().get_code()
    check(version.git_version.startswith("v1."), f"gitVersion {version.git_version!r}")
    step(f"server version {version.git_version}")

    def nodes_ready():
        listed = core.list_node().items
        ready = {
            n.metadata.name: [c.status for c in n.status.conditions or [] if c.type == "Ready"]
            for n in listed
        }
        return len(listed) == nodes and all(r == ["True"] for r in ready.values()), ready

    ready = eventually(f"{nodes} Ready nodes", nodes_ready)
    step(f"nodes {sorted(ready)} Ready")

    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    step(f"namespace {namespace} created")

    labels = {"app": "web"}
    deployment = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web", labels=dict(labels)),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels=dict(labels)),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=dict(labels)),
                spec=client.V1PodSpec(
                    containers=[client.V1Container(name="web", image="busybox:1.36")]
                ),
            ),
        ),
    )
    created = apps.create_namespaced_deployment(namespace, deployment)
    check(created.metadata.name == "web", f"created {created.metadata.name!r}")
    check(bool(created.metadata.uid), "the created Deployment has no uid")
    check(created.spec.replicas == 2, f"created with replicas {created.spec.replicas}")
    step("deployment web created")

    matching = apps.list_namespaced_deployment(namespace, label_selector="app=web")
    names = [d.metadata.name for d in matching.items]
    check(names == ["web"], f"app=web lists {names}")
    other = apps.list_namespaced_deployment(namespace, label_selector="app=other")
    check(other.items == [], f"app=other lists {[d.metadata.name for d in other.items]}")
    step("label selectors")

    added = set()
    w = watch.Watch()
    for event in w.stream(
        core.list_namespaced_pod,
        namespace,
        label_selector="app=web",
        timeout_seconds=SETTLE,
        _request_timeout=SETTLE + 10,
    ):
        if event["type"] == "ADDED":
            added.add(event["object"].metadata.name)
        if len(added) >= 2:
            w.stop()
    check(len(added) >= 2, f"the watch saw ADDED for {sorted(added)} only")
    step(f"watch saw pods {sorted(added)} ADDED")

    def web_ready():
        status = apps.read_namespaced_deployment("web", namespace).status
        return (status.ready_replicas or 0) == 2, status
    eventually("web 2/2 ready", web_ready)
    step("deployment web 2/2 ready")

    patched = apps.patch_namespaced_deployment(
        "web", namespace, {"metadata": {"labels": {"tier": "frontend"}}}
    )
    want = {"app": "web", "tier": "frontend"}
    check(patched.metadata.labels == want, f"labels after the patch: {patched.metadata.labels}")
    containers = patched.spec.template.spec.containers
    check(
        [(c.name, c.image) for c in containers] == [("web", "busybox:1.36")],
        f"containers after a label patch: {containers}",
    )
    step("strategic merge patch added a label and kept the rest")

    scale = apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 3}})
    check(scale.spec.replicas == 3, f"scale answered replicas {scale.spec.replicas}")

    def three_running():
        pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
        running = sorted(p.metadata.name for p in pods if p.status and p.status.phase == "Running")
        return len(running) == 3, running
    eventually("3 Running web pods", three_running)
    replicas = apps.read_namespaced_deployment("web", namespace).spec.replicas
    check(replicas == 3, f"spec.replicas {replicas} after scaling to 3")
    step("scaled to 3 through deployments/scale")

    missing = not_found(lambda: core.read_namespaced_pod("nope", namespace))
    check(missing, "reading pod nope did not fail with 404 NotFound")
    step("a missing pod is 404 NotFound")

    apps.delete_namespaced_deployment("web", namespace)

    def gone():
        return not_found(lambda: apps.read_namespaced_deployment("web", namespace)), "still there"
    eventually("deployment web gone", gone)
    step("deployment web deleted")
    print("PASSED", flush=True)


if __name__ == "__main__":
    main()
