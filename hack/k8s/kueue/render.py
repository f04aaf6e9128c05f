"""Render what the local control plane needs to run Kueue as a process on loopback.

Usage: python3 hack/k8s/kueue/render.py KUEUE_DIR OUT_DIR CA_CRT HOST_IP WEBHOOK_PORT HEALTH_PORT
                                        METRICS_PORT VISIBILITY_PORT INVENTORY

KUEUE_DIR is the cache hack/k8s/kueue/build.sh fills (crd/, webhook/ and visibility/
copied from the Kueue module's config/components). Writes into OUT_DIR:
  config.yaml    hack/k8s/kueue/config.yaml with the webhook, health and metrics addresses
  crds.yaml      Kueue's CRDs; those its kustomization gives a conversion webhook get one
                 at https://127.0.0.1:WEBHOOK_PORT/convert, trusting CA_CRT
  webhooks.yaml  Kueue's Mutating/ValidatingWebhookConfigurations with clientConfig.url
                 instead of a Service, keeping the webhooks of Kueue's own kinds and of the
                 integrations the config enables (a webhook of a disabled integration would
                 intercept every Pod or Deployment for nothing)
  visibility.yaml  Kueue's visibility APIServices (pending workloads and their positions,
                 served through the API server's aggregation layer) behind a Service
                 without selector whose Endpoints are HOST_IP:VISIBILITY_PORT, the
                 visibility server Kueue runs on this machine
  queues.yaml    hack/k8s/kueue/queues.yaml with a GPU flavour and quota per device product
                 of INVENTORY (TRAINWRIGHT_INVENTORY: a custom inventory gets its quotas)
"""

from __future__ import annotations

import base64
import copy
import re
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
KUEUE_GROUP = "kueue.x-k8s.io"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# The CRDs are ~40,000 lines of YAML: libyaml reads them in a second, pure Python in ten.
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
# Kueue integration (Configuration.integrations.frameworks) -> (API group, resource) of
# the objects its webhooks admit.
FRAMEWORK_RESOURCES = {
    "batch/job": ("batch", "jobs"),
    "jobset.x-k8s.io/jobset": ("jobset.x-k8s.io", "jobsets"),
    "pod": ("", "pods"),
}


def render_config(
    template: dict[str, Any], webhook_port: int, health: int, metrics: int, cert_dir: Path
) -> dict[str, Any]:
    config = dict(template)
    config["webhook"] = {"host": "127.0.0.1", "port": webhook_port, "certDir": str(cert_dir)}
    config["health"] = {"healthProbeBindAddress": f"127.0.0.1:{health}"}
    config["metrics"] = {**config.get("metrics", {}), "bindAddress": f"127.0.0.1:{metrics}"}
    return config


def enabled_resources(config: dict[str, Any]) -> set[tuple[str, str]]:
    resources = set()
    for framework in config["integrations"]["frameworks"]:
        if framework not in FRAMEWORK_RESOURCES:
            raise SystemExit(
                f"render.py: integration {framework!r} in hack/k8s/kueue/config.yaml has no "
                f"webhook mapping; known: {', '.join(sorted(FRAMEWORK_RESOURCES))}."
            )
        resources.add(FRAMEWORK_RESOURCES[framework])
    return resources


def webhook_kind(webhook: dict[str, Any], resources: set[tuple[str, str]]) -> str | None:
    """ "kueue" for a webhook of Kueue's own kinds, "integration" for one of an enabled
    integration's objects, None for the rest."""
    for rule in webhook.get("rules", []):
        for group in rule["apiGroups"]:
            if group == KUEUE_GROUP:
                return "kueue"
            if any((group, resource) in resources for resource in rule["resources"]):
                return "integration"
    return None


def render_webhooks(
    manifests: list[dict[str, Any]],
    url: str,
    ca_bundle: str,
    resources: set[tuple[str, str]],
    only_queued: bool,
) -> list[dict[str, Any]]:
    """The webhook configurations pointing at url; with only_queued (the configuration's
    manageJobsWithoutQueueName: false) an integration's webhooks see only objects that name
    a queue, old or new (the API server matches objectSelector against both on UPDATE), so
    the operator's plain Jobs never wait on Kueue, nor fail if it is down."""
    rendered = []
    for config in manifests:
        webhooks = []
        for webhook in config["webhooks"]:
            kind = webhook_kind(webhook, resources)
            if kind is None:
                continue
            path = webhook["clientConfig"]["service"]["path"]
            webhook["clientConfig"] = {"url": url + path, "caBundle": ca_bundle}
            if kind == "integration" and only_queued:
                webhook["objectSelector"] = {
                    "matchExpressions": [{"key": QUEUE_LABEL, "operator": "Exists"}]
                }
            webhooks.append(webhook)
        config["metadata"]["name"] = "kueue-" + config["metadata"]["name"]
        config["webhooks"] = webhooks
        rendered.append(config)
    return rendered


def conversion_crds(crd_dir: Path) -> set[str]:
    """The CRDs Kueue's kustomization patches with a conversion webhook."""
    kustomization = yaml.load((crd_dir / "kustomization.yaml").read_text(encoding="utf-8"), LOADER)
    names = set()
    for patch in kustomization.get("patches", []):
        document = yaml.load((crd_dir / patch["path"]).read_text(encoding="utf-8"), LOADER)
        if document.get("spec", {}).get("conversion", {}).get("strategy") == "Webhook":
            names.add(document["metadata"]["name"])
    return names


def render_crds(crd_dir: Path, url: str, ca_bundle: str) -> list[dict[str, Any]]:
    converted = conversion_crds(crd_dir)
    crds = []
    for path in sorted((crd_dir / "bases").glob("*.yaml")):
        crd = yaml.load(path.read_text(encoding="utf-8"), LOADER)
        if crd["metadata"]["name"] in converted:
            crd["spec"]["conversion"] = {
                "strategy": "Webhook",
                "webhook": {
                    "clientConfig": {"url": url + "/convert", "caBundle": ca_bundle},
                    "conversionReviewVersions": ["v1"],
                },
            }
        crds.append(crd)
    return crds


VISIBILITY_SERVICE = "kueue-visibility-server"


def render_visibility(
    visibility_dir: Path, namespace: str, host_ip: str, port: int, ca_bundle: str
) -> list[dict[str, Any]]:
    """A Service, its Endpoints and Kueue's APIServices pointing at it, trusting CA_CRT."""
    meta = {"name": VISIBILITY_SERVICE, "namespace": namespace}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]},
    }
    endpoints = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": meta,
        "subsets": [{"addresses": [{"ip": host_ip}], "ports": [{"name": "https", "port": port}]}],
    }
    apiservices = []
    for path in sorted(visibility_dir.glob("apiservice_*.yaml")):
        apiservice = yaml.load(path.read_text(encoding="utf-8"), LOADER)
        spec = apiservice["spec"]
        spec.pop("insecureSkipTLSVerify", None)
        spec["caBundle"] = ca_bundle
        spec["service"] = {"name": VISIBILITY_SERVICE, "namespace": namespace, "port": 443}
        apiservices.append(apiservice)
    return [service, endpoints, *apiservices]


def dump(path: Path, documents: list[dict[str, Any]]) -> None:
    path.write_text(yaml.dump_all(documents, Dumper=DUMPER, sort_keys=False), encoding="utf-8")


GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_RESOURCE = "nvidia.com/gpu"
_SUFFIXES = {
    "": 1, "m": 0.001, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
}  # fmt: skip
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$")


def _parse(quantity: str) -> tuple[float, str]:
    """(number, unit suffix) of a Kubernetes quantity: "1152Gi" is (1152.0, "Gi")."""
    match = _QUANTITY.match(str(quantity))
    if match is None:
        raise SystemExit(f"render.py: {quantity!r} is not a Kubernetes quantity")
    return float(match.group(1)), match.group(2) or ""


def _times(quantity: str, count: int) -> str:
    """``count`` x a Kubernetes quantity, in its own unit: 2 x "2Ti" is "4Ti"."""
    number, unit = _parse(quantity)
    return f"{_number(number * count)}{unit}"


def _plus(a: str, b: str) -> str:
    """The sum of two quantities, in their unit when they share one, else in plain units."""
    (na, ua), (nb, ub) = _parse(a), _parse(b)
    if ua == ub:
        return f"{_number(na + nb)}{ua}"
    return _number(na * _SUFFIXES[ua] + nb * _SUFFIXES[ub])


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def _yaml_quantity(quantity: str) -> int | str:
    """A unit-less whole quantity as a YAML number (as queues.yaml writes it), else text."""
    return int(quantity) if quantity.isdigit() else quantity


def flavour_name(product: str) -> str:
    """A GPU flavour is named after its product lowercased, so the nodeSelector the operator
    puts on a trainer pod names its flavour."""
    return product.lower()


def render_queues(
    template: list[dict[str, Any]], groups: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """queues.yaml with its GPU flavours and quotas made from the inventory ``groups``
    (hack/k8s/nodes.py's validated entries): one ResourceFlavor per product, quota = the
    product's GPUs, CPU and memory over all its nodes. The other flavours (the real node's
    CPU ranks), LocalQueues and priorities stay as the template has them."""
    quotas: dict[str, dict[str, str]] = {}
    for group in groups:
        nodes = int(group["nodes"])
        mine = {
            GPU_RESOURCE: str(nodes * int(group["gpusPerNode"])),
            "cpu": _times(str(group["cpu"]), nodes),
            "memory": _times(str(group["memory"]), nodes),
        }
        known = quotas.get(group["product"])
        quotas[group["product"]] = (
            mine if known is None else {key: _plus(known[key], mine[key]) for key in mine}
        )

    def is_gpu_flavour(document: dict[str, Any]) -> bool:
        labels = (document.get("spec") or {}).get("nodeLabels") or {}
        return document.get("kind") == "ResourceFlavor" and GPU_PRODUCT_LABEL in labels

    gpu_names = {d["metadata"]["name"] for d in template if is_gpu_flavour(d)}
    flavours = [
        {
            "apiVersion": f"{KUEUE_GROUP}/v1beta2",
            "kind": "ResourceFlavor",
            "metadata": {"name": flavour_name(product)},
            "spec": {"nodeLabels": {GPU_PRODUCT_LABEL: product}},
        }
        for product in quotas
    ]
    rendered: list[dict[str, Any]] = []
    for document in template:
        if is_gpu_flavour(document):
            if flavours:  # the inventory's flavours where the template's were
                rendered += flavours
                flavours = []
            continue
        if document.get("kind") == "ClusterQueue":
            document = copy.deepcopy(document)
            for resource_group in document["spec"]["resourceGroups"]:
                covered = resource_group["coveredResources"]
                others = [f for f in resource_group["flavors"] if f["name"] not in gpu_names]
                gpu = [
                    {
                        "name": flavour_name(product),
                        "resources": [
                            {"name": name, "nominalQuota": _yaml_quantity(quota.get(name, "0"))}
                            for name in covered
                        ],
                    }
                    for product, quota in quotas.items()
                ]
                resource_group["flavors"] = gpu + others
        rendered.append(document)
    return rendered


def main(argv: list[str]) -> int:
    if len(argv) != 9:
        print("\n".join(__doc__.strip().splitlines()[2:4]), file=sys.stderr)
        return 2
    kueue_dir, out_dir, ca_crt, host_ip = Path(argv[0]), Path(argv[1]), Path(argv[2]), argv[3]
    webhook_port, health_port, metrics_port, visibility_port = (int(port) for port in argv[4:8])
    inventory = Path(argv[8])
    out_dir.mkdir(parents=True, exist_ok=True)
    template = yaml.safe_load((HERE / "config.yaml").read_text(encoding="utf-8"))
    config = render_config(template, webhook_port, health_port, metrics_port, out_dir / "certs")
    dump(out_dir / "config.yaml", [config])
    url = f"https://127.0.0.1:{webhook_port}"
    ca_bundle = base64.b64encode(ca_crt.read_bytes()).decode()
    dump(out_dir / "crds.yaml", render_crds(kueue_dir / "crd", url, ca_bundle))
    manifests = list(yaml.load_all((kueue_dir / "webhook" / "manifests.yaml").read_text(), LOADER))
    only_queued = config.get("manageJobsWithoutQueueName") is False
    webhooks = render_webhooks(manifests, url, ca_bundle, enabled_resources(config), only_queued)
    dump(out_dir / "webhooks.yaml", webhooks)
    visibility = render_visibility(
        kueue_dir / "visibility", config["namespace"], host_ip, visibility_port, ca_bundle
    )
    dump(out_dir / "visibility.yaml", visibility)
    sys.path.insert(0, str(HERE.parent))
    from nodes import node_groups  # hack/k8s/nodes.py: the inventory, validated once

    template = list(yaml.safe_load_all((HERE / "queues.yaml").read_text(encoding="utf-8")))
    groups = node_groups(yaml.safe_load(inventory.read_text(encoding="utf-8")))
    dump(out_dir / "queues.yaml", render_queues(template, groups))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
