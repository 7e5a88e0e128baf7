"""Run a built upstream controller (patterns/versions.yaml `controllers:`) as a local process
against a kubeconfig: how the e2e tests get real reconciliation on a kwok cluster.

Out of cluster the API server cannot reach a controller's webhooks through a Service, so the
controller serves them on 127.0.0.1 with a certificate made here, and the webhook configurations
shipped in the same module version are pointed at that address. Leader election is off and every
port is a free one, so several controllers (and several test runs) can share a machine.
"""
from __future__ import annotations

import base64
import copy
import ipaddress
import json
import os
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lightrail import tools
from lightrail.catalog import load_catalog
from lightrail.errors import LightrailError
from lightrail.ops.prereqs import ISTIOD_SETTINGS
from lightrail.settings import TOOLS_BIN

WEBHOOK_KINDS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
KSERVE_NAMESPACE = "kserve"
# What a KServe install provides besides its controller: the ingress Gateway (class istio) it attaches to.
KSERVE_INGRESS_GATEWAY = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                          "metadata": {"name": "kserve-ingress-gateway", "namespace": KSERVE_NAMESPACE},
                          "spec": {"gatewayClassName": "istio", "listeners": [
                              {"name": "http", "port": 80, "protocol": "HTTP",
                               "allowedRoutes": {"namespaces": {"from": "All"}}}]}}
ISTIO_NAMESPACE = "istio-system"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def installed(name: str) -> Path:
    """The directory of a built controller (its binaries and `files`), or an error naming the build command."""
    pin = load_catalog().versions["controllers"][name]
    binary = TOOLS_BIN / next(iter(pin["binaries"]))
    if not binary.exists():
        raise LightrailError(f"{binary.name} ({pin['module']} {pin['version']}) is not built",
                             fix=f"run scripts/build_control_plane.py controllers {name}")
    return binary.resolve().parent


def serving_cert(directory: Path) -> bytes:
    """A self-signed certificate for 127.0.0.1 as tls.crt/tls.key (controller-runtime's names); returns its PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lightrail local webhook")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tls.crt").write_bytes(pem)
    (directory / "tls.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return pem


def local_webhooks(documents: list[dict], port: int, ca: bytes) -> list[dict]:
    """Upstream webhook configurations with each Service reference replaced by https://127.0.0.1:PORT/<path>."""
    out = []
    for doc in documents:
        if doc.get("kind") not in WEBHOOK_KINDS:
            continue
        doc = copy.deepcopy(doc)
        for hook in doc["webhooks"]:
            path = hook["clientConfig"]["service"].get("path", "")
            hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}",
                                    "caBundle": base64.b64encode(ca).decode()}
        out.append(doc)
    return out


def local_crds(documents: list[dict], port: int, ca: bytes) -> list[dict]:
    """The CRDs among these documents, with the conversion webhook of their kustomize patches served locally."""
    crds = {d["metadata"]["name"]: copy.deepcopy(d) for d in documents
            if d.get("kind") == "CustomResourceDefinition" and "versions" in d["spec"]}
    for patch in documents:
        if patch.get("kind") == "CustomResourceDefinition" and "conversion" in patch["spec"] and "versions" not in patch["spec"]:
            crds[patch["metadata"]["name"]]["spec"]["conversion"] = copy.deepcopy(patch["spec"]["conversion"])
    for crd in crds.values():
        client = crd["spec"].get("conversion", {}).get("webhook", {}).get("clientConfig")
        if client and "service" in client:
            client.update(url=f"https://127.0.0.1:{port}{client.pop('service').get('path', '')}",
                          caBundle=base64.b64encode(ca).decode())
    return list(crds.values())


def in_namespace(documents: list[dict], namespace: str) -> list[dict]:
    """Namespaced upstream objects that kustomize would have put in `namespace`."""
    return [{**d, "metadata": {**d["metadata"], "namespace": namespace}} for d in documents]


def documents(*paths: Path) -> list[dict]:
    """Every YAML document in these files, or in the *.yaml files of these directories."""
    files = [f for p in paths for f in (sorted(p.glob("*.yaml")) if p.is_dir() else [p])]
    return [doc for f in files for doc in yaml.safe_load_all(f.read_text()) if doc]


@dataclass
class Controller:
    """One controller process; `objects` are applied before it starts (CRDs, webhook configurations),
    `after` once it serves its webhooks (objects they admit)."""
    name: str
    argv: list[str]
    workdir: Path
    ready_url: str
    env: dict[str, str] = field(default_factory=dict)
    objects: list[dict] = field(default_factory=list)
    after: list[dict] = field(default_factory=list)
    process: subprocess.Popen | None = None

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self, timeout: float = 120, new_session: bool = False) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env={**os.environ, **self.env}, cwd=self.workdir,
                                            start_new_session=new_session)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LightrailError(f"{self.name} exited with {self.process.returncode}: {self.tail()}")
            try:
                if httpx.get(self.ready_url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise LightrailError(f"{self.name} was not ready within {timeout:.0f} s: {self.tail()}")

    def tail(self, lines: int = 5) -> str:
        return " / ".join(self.log.read_text(errors="replace").strip().splitlines()[-lines:])

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def lws(kubeconfig: Path, workdir: Path) -> Controller:
    """LeaderWorkerSet: its pod webhook labels leader pods, which the pod controller needs to create the workers."""
    home = installed("lws")
    webhook, health = free_port(), free_port()
    ca = serving_cert(workdir / "certs")
    config = workdir / "lws-config.yaml"
    config.write_text(yaml.safe_dump({
        "apiVersion": "config.lws.x-k8s.io/v1alpha1", "kind": "Configuration",
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "webhook": {"host": "127.0.0.1", "port": webhook, "certDir": str(workdir / "certs")},
        "metrics": {"bindAddress": "0"},
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health}"},
    }))
    return Controller(
        name="lws", workdir=workdir, ready_url=f"http://127.0.0.1:{health}/readyz",
        argv=[str(home / "lws-controller"), f"--config={config}"], env={"KUBECONFIG": str(kubeconfig)},
        objects=documents(home / "config" / "crd" / "bases")
        + local_webhooks(documents(home / "config" / "webhook" / "manifests.yaml"), webhook, ca))


def kserve(kubeconfig: Path, workdir: Path) -> Controller:
    """KServe's LLMInferenceService controller: its config map and presets live in POD_NAMESPACE; its
    webhooks (defaulting, validation, v1alpha1<->v1alpha2 conversion) need a certificate in
    controller-runtime's default directory, under TMPDIR."""
    config = installed("kserve") / "config"
    webhook, health = free_port(), free_port()
    ca = serving_cert(workdir / "k8s-webhook-server" / "serving-certs")
    presets = [d for d in documents(config / "llmisvcconfig") if d.get("kind") == "LLMInferenceServiceConfig"]
    return Controller(
        name="kserve", workdir=workdir, ready_url=f"http://127.0.0.1:{health}/readyz",
        argv=[str(config.parent / "llmisvc-controller"), f"--webhook-port={webhook}",
              f"--health-probe-addr=127.0.0.1:{health}", "--metrics-addr=0"],
        env={"KUBECONFIG": str(kubeconfig), "POD_NAMESPACE": KSERVE_NAMESPACE, "TMPDIR": str(workdir)},
        objects=[{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": KSERVE_NAMESPACE}}]
        + local_crds(documents(config / "crd" / "full" / "llmisvc"), webhook, ca)
        + documents(config / "configmap" / "inferenceservice.yaml")
        + local_webhooks(documents(config / "webhook" / "llmisvc" / "manifests.yaml"), webhook, ca),
        after=in_namespace(presets, KSERVE_NAMESPACE))


def istio(kubeconfig: Path, workdir: Path) -> Controller:
    """istiod as the istiod chart of the same version configures it, with the values `invoke prereqs --istio`
    sets (its env, mesh config, and the injection templates the Gateway deployment controller renders
    gateway proxies from), its servers on free loopback ports. Its webhooks (sidecar injection, config
    validation) are left out: their certificate is for the istiod Service, which istiod issues itself."""
    home = installed("istio")
    chart = tools.run("helm", "template", "istiod", str(home / "manifests/charts/istio-control/istio-discovery"),
                      "--namespace", ISTIO_NAMESPACE, *(a for s in ISTIOD_SETTINGS for a in ("--set", s))).stdout
    rendered = [d for d in yaml.safe_load_all(chart) if d]
    config_maps = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "ConfigMap"}
    for directory, name in (("etc/istio/config", "istio"), ("var/lib/istio/inject", "istio-sidecar-injector")):
        (workdir / directory).mkdir(parents=True, exist_ok=True)   # pilot-discovery's default paths, relative to its cwd
        for key, value in config_maps[name]["data"].items():
            (workdir / directory / key).write_text(value)
    (deployment,) = [d for d in rendered if d["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e and e["name"] != "KUBECONFIG"}
    ports = {flag: free_port() for flag in ("httpAddr", "httpsAddr", "grpcAddr", "secureGRPCAddr", "monitoringAddr")}
    args = [a for a in container["args"] if not a.startswith("--monitoringAddr")]
    return Controller(
        name="istiod", workdir=workdir, ready_url=f"http://127.0.0.1:{ports['httpAddr']}/ready",
        argv=[str(home / "pilot-discovery"), *args, f"--kubeconfig={kubeconfig}",
              *(f"--{flag}=127.0.0.1:{port}" for flag, port in ports.items())],
        env={**env, "POD_NAMESPACE": ISTIO_NAMESPACE, "POD_NAME": "istiod-local", "SERVICE_ACCOUNT": "istiod"},
        objects=[{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ISTIO_NAMESPACE}}]
        + documents(home / "manifests/charts/base/files/crd-all.gen.yaml") + list(config_maps.values()))


RECIPES = {"lws": lws, "kserve": kserve, "istio": istio}


def established(crds: list[str], kubeconfig: Path, timeout: float = 60) -> None:
    """Wait until these CRDs are served (`kubectl wait` rejects a CRD so new that it has no conditions)."""
    deadline = time.monotonic() + timeout
    while crds:
        data = json.loads(tools.run("kubectl", f"--kubeconfig={kubeconfig}", "get", "-o", "json",
                                    *(f"crd/{c}" for c in crds)).stdout)
        crds = [i["metadata"]["name"] for i in data.get("items", [data])   # one name gives the object itself
                if not any(c["type"] == "Established" and c["status"] == "True"
                           for c in i.get("status", {}).get("conditions") or [])]
        if crds and time.monotonic() > deadline:
            raise LightrailError(f"CRDs not established within {timeout:.0f} s: {', '.join(crds)}")
        if crds:
            time.sleep(0.5)


@contextmanager
def running(name: str, kubeconfig: Path, workdir: Path):
    """Apply what the controller needs, start it, wait until it is ready; on exit stop it and remove
    its webhook configurations (left behind, they would refuse every admission they cover)."""
    workdir.mkdir(parents=True, exist_ok=True)
    controller = RECIPES[name](kubeconfig, workdir)
    kubectl = (f"--kubeconfig={kubeconfig}",)
    apply = (*kubectl, "apply", "--server-side", "--force-conflicts", "-f", "-")
    tools.run("kubectl", *apply, input=yaml.safe_dump_all(controller.objects))
    try:
        established([o["metadata"]["name"] for o in controller.objects if o["kind"] == "CustomResourceDefinition"],
                    kubeconfig)
        controller.start()
        if controller.after:
            tools.run("kubectl", *apply, input=yaml.safe_dump_all(controller.after))
        yield controller
    finally:
        controller.stop()
        hooks = [f"{o['kind'].lower()}/{o['metadata']['name']}" for o in controller.objects if o["kind"] in WEBHOOK_KINDS]
        if hooks:
            tools.run("kubectl", *kubectl, "delete", "--ignore-not-found", *hooks)


def start_detached(name: str, kubeconfig: Path, workdir: Path) -> int:
    """Like `running`, for a controller that outlives this process (`invoke up --engine=kwok`): started in a
    session of its own, ready when this returns; the caller keeps the pid and ends the process group."""
    controller = RECIPES[name](kubeconfig, workdir)
    tools.run("kubectl", f"--kubeconfig={kubeconfig}", "apply", "--server-side", "--force-conflicts", "-f", "-",
              input=yaml.safe_dump_all(controller.objects))
    established([o["metadata"]["name"] for o in controller.objects if o["kind"] == "CustomResourceDefinition"],
                kubeconfig)
    controller.start(new_session=True)
    if controller.after:
        tools.run("kubectl", f"--kubeconfig={kubeconfig}", "apply", "--server-side", "-f", "-",
                  input=yaml.safe_dump_all(controller.after))
    return controller.process.pid
