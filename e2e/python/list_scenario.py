"""Lists at a revision, with the official Kubernetes Python client.

Run by e2e/tests/e2e/python_lists.rs with the venv that scripts/test-clients
makes:

    python list_scenario.py ADMIN_CONF NAMESPACE

In NAMESPACE (made here, with its root CA ConfigMap) it creates ConfigMaps
cm-0 .. cm-4, then:

- pages through them two at a time (`limit`, `continue`) while they
  change between pages (cm-3 deleted, cm-5 created, cm-2's data changed):
  every page is at the first page's resourceVersion and together they are
  the five as they were;
- lists with `resourceVersionMatch=Exact` at that revision: the same five,
  as they were; the newest list has the changes;
- asks for what kube-apiserver refuses: `resourceVersionMatch` without
  `resourceVersion`, `Exact` at "0", an unknown match (422 Invalid, the
  ListOptions' fields named), `continue` with `resourceVersion` (400), and
  an exact revision the server has not reached (504 "Too large resource
  version", after the server's wait);
- pages a field-selected list: continued, with no remainingItemCount, as
  kube-apiserver does not count a selected list's remaining items;
- pages every namespace's ConfigMaps, NAMESPACE's and NAMESPACE-b's among
  them (names that sort one way as text and the other as (namespace,
  name)), at limits 1, 2 and 3: each ConfigMap once, in order.

It prints a line per step and, on the first check that fails, what it
saw; then it exits 1. PASSED at the end.
"""

import json
import sys
import time

from kubernetes import client, config
from kubernetes.client.rest import ApiException


def fail(message):
    print(f"FAILED: {message}", flush=True)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def step(message):
    print(f"ok: {message}", flush=True)


def refused(call, status):
    """The Status body of call()'s refusal, which must have HTTP `status`."""
    try:
        answer = call()
    except ApiException as e:
        check(e.status == status, f"status {e.status}, not {status}: {e.body}")
        try:
            return json.loads(e.body or "")
        except ValueError:
            fail(f"a {status} whose body is not JSON: {e.body!r}")
    fail(f"allowed, not refused with {status}: {answer}")


# The CA ConfigMap every namespace gets.
ROOT_CA = "kube-root-ca.crt"


def summary(items):
    """name -> data['n'] of the scenario's ConfigMaps (not the root CA's)."""
    return {cm.metadata.name: (cm.data or {}).get("n") for cm in items if cm.metadata.name != ROOT_CA}


def wait_for_root_ca(core, namespace):
    """Waits (30 s at most) for the root CA ConfigMap a controller makes in
    every namespace."""
    deadline = time.monotonic() + 30
    while ROOT_CA not in [cm.metadata.name for cm in core.list_namespaced_config_map(namespace).items]:
        check(time.monotonic() < deadline, f"no {ROOT_CA} in {namespace} after 30 s")
        time.sleep(0.2)


def main():
    if len(sys.argv) != 3:
        fail(f"usage: list_scenario.py ADMIN_CONF NAMESPACE (got {sys.argv[1:]})")
    kubeconfig, namespace = sys.argv[1], sys.argv[2]
    config.load_kube_config(config_file=kubeconfig)
    core = client.CoreV1Api()
    core.create_namespace({"metadata": {"name": namespace}})

    def configmap(name, n):
        return {"metadata": {"name": name}, "data": {"n": n}}

    # The namespace's root CA ConfigMap, made by a controller: there
    # before the pages, so that they hold six ConfigMaps.
    wait_for_root_ca(core, namespace)
    for i in range(5):
        core.create_namespaced_config_map(namespace, configmap(f"cm-{i}", "old"))
    before = {f"cm-{i}": "old" for i in range(5)}
    step("made cm-0 .. cm-4")

    # Pages, with changes between them.
    first = core.list_namespaced_config_map(namespace, limit=2)
    revision = first.metadata.resource_version
    check(len(first.items) == 2, f"first page: {[cm.metadata.name for cm in first.items]}")
    check(bool(first.metadata._continue), "the first page has no continue token")
    check(
        first.metadata.remaining_item_count == 4,
        f"remainingItemCount {first.metadata.remaining_item_count}",
    )
    core.delete_namespaced_config_map("cm-3", namespace)
    core.create_namespaced_config_map(namespace, configmap("cm-5", "new"))
    core.patch_namespaced_config_map("cm-2", namespace, {"data": {"n": "new"}})
    pages = [first]
    while pages[-1].metadata._continue:
        if len(pages) > 5:
            fail("more pages than five items make")
        page = core.list_namespaced_config_map(
            namespace, limit=2, _continue=pages[-1].metadata._continue
        )
        check(
            page.metadata.resource_version == revision,
            f"page {len(pages) + 1} is at {page.metadata.resource_version}, the first at {revision}",
        )
        pages.append(page)
    paged = {}
    for page in pages:
        paged.update(summary(page.items))
    check(len(pages) == 3, f"{len(pages)} pages")
    check(paged == before, f"the pages hold {paged}, not the list at {revision}: {before}")
    step(f"three pages at revision {revision}, unchanged by the writes between them")

    exact = core.list_namespaced_config_map(
        namespace, resource_version=revision, resource_version_match="Exact"
    )
    check(exact.metadata.resource_version == revision, f"Exact list at {exact.metadata.resource_version}")
    check(summary(exact.items) == before, f"Exact list at {revision}: {summary(exact.items)}")
    newest = core.list_namespaced_config_map(namespace)
    after = {"cm-0": "old", "cm-1": "old", "cm-2": "new", "cm-4": "old", "cm-5": "new"}
    check(summary(newest.items) == after, f"newest list: {summary(newest.items)}")
    check(
        int(newest.metadata.resource_version) > int(revision),
        f"newest list at {newest.metadata.resource_version}",
    )
    step("an Exact list is the list as it was; the newest has the changes")

    def invalid(what, call, field_message):
        status = refused(call, 422)
        check(status.get("reason") == "Invalid", f"{what}: {status}")
        details = status.get("details") or {}
        check(
            (details.get("kind"), details.get("group")) == ("ListOptions", "meta.k8s.io"),
            f"{what}: details {details}",
        )
        causes = [(c.get("field"), c.get("message")) for c in details.get("causes") or []]
        check(("resourceVersionMatch", field_message) in causes, f"{what}: causes {causes}")
        check(
            status.get("message", "").startswith('ListOptions.meta.k8s.io "" is invalid: '),
            f"{what}: {status.get('message')}",
        )

    invalid(
        "Exact without a resourceVersion",
        lambda: core.list_namespaced_config_map(namespace, resource_version_match="Exact"),
        "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
    )
    invalid(
        "Exact at 0",
        lambda: core.list_namespaced_config_map(
            namespace, resource_version="0", resource_version_match="Exact"
        ),
        'Forbidden: resourceVersionMatch "exact" is forbidden for resourceVersion "0"',
    )
    invalid(
        "an unknown match",
        lambda: core.list_namespaced_config_map(
            namespace, resource_version=revision, resource_version_match="Sometimes"
        ),
        'Unsupported value: "Sometimes": supported values: "Exact", "NotOlderThan", ""',
    )
    # "0" with a continue token is taken, as kube-apiserver takes it.
    again = core.list_namespaced_config_map(
        namespace, limit=2, _continue=first.metadata._continue, resource_version="0"
    )
    check(again.metadata.resource_version == revision, f"continue with 0 at {again.metadata.resource_version}")
    status = refused(
        lambda: core.list_namespaced_config_map(
            namespace, limit=2, _continue=first.metadata._continue, resource_version=revision
        ),
        400,
    )
    check(
        status.get("message") == "specifying resource version is not allowed when using continue",
        f"continue with a resourceVersion: {status}",
    )
    step("refused as kube-apiserver refuses them: match without version, Exact at 0, unknown match, continue with version")

    ahead = str(int(newest.metadata.resource_version) + 1000)
    started = time.monotonic()
    status = refused(
        lambda: core.list_namespaced_config_map(
            namespace, resource_version=ahead, resource_version_match="Exact"
        ),
        504,
    )
    waited = time.monotonic() - started
    check(status.get("reason") == "Timeout", f"a revision ahead: {status}")
    check(
        status.get("message", "").startswith(f"Timeout: Too large resource version: {ahead}, current: "),
        f"a revision ahead: {status}",
    )
    details = status.get("details") or {}
    check(details.get("retryAfterSeconds") == 1, f"a revision ahead: details {details}")
    check(
        details.get("causes") == [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
        f"a revision ahead: causes {details.get('causes')}",
    )
    check(2.5 <= waited <= 10, f"answered after {waited:.1f} s, not after the server's 3 s wait")
    step(f"a revision the server has not reached: 504 after {waited:.1f} s")

    selected = core.list_namespaced_config_map(
        namespace, limit=2, field_selector=f"metadata.name!={ROOT_CA}"
    )
    check(len(selected.items) == 2, f"selected page: {summary(selected.items)}")
    check(bool(selected.metadata._continue), "a selected first page has no continue token")
    check(
        selected.metadata.remaining_item_count is None,
        f"a selected list counted {selected.metadata.remaining_item_count} remaining items",
    )
    step("a selected page: continued, its remaining items not counted (as kube-apiserver)")

    # Pages across namespaces whose names sort differently as text and
    # as (namespace, name): NAMESPACE and NAMESPACE-b ('-' sorts before
    # '/'). Every ConfigMap of the cluster, once, at the first page's
    # revision.
    other = f"{namespace}-b"
    core.create_namespace({"metadata": {"name": other}})
    for i in range(3):
        core.create_namespaced_config_map(other, configmap(f"cm-{i}", "b"))
    wait_for_root_ca(core, other)
    whole = core.list_config_map_for_all_namespaces()
    expected = sorted((cm.metadata.namespace, cm.metadata.name) for cm in whole.items)
    for limit in (1, 2, 3):
        seen = []
        page = core.list_config_map_for_all_namespaces(limit=limit)
        at = page.metadata.resource_version
        while True:
            check(page.metadata.resource_version == at, f"limit {limit}: a page at {page.metadata.resource_version}, not {at}")
            seen.extend((cm.metadata.namespace, cm.metadata.name) for cm in page.items)
            if not page.metadata._continue:
                break
            check(len(seen) <= len(expected), f"limit {limit}: more items than the list has: {seen}")
            page = core.list_config_map_for_all_namespaces(limit=limit, _continue=page.metadata._continue)
        check(seen == expected, f"limit {limit}: pages gave {seen}, the list {expected}")
    step(f"pages of every namespace's ConfigMaps ({len(expected)}, with {namespace} and {other}) at limits 1, 2, 3: each once, in order")

    core.delete_namespace(other)
    core.delete_namespace(namespace)
    print("PASSED", flush=True)


if __name__ == "__main__":
    main()
