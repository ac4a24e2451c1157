#!/usr/bin/env python3
"""Checks the Helm chart offline: lint, render (defaults and every
ci/*-values.yaml), validate each manifest against the Kubernetes schemas of
the oldest and newest supported versions, yamllint, shape checks, values the
schema must refuse, and the rendered configuration fed to
`pushgate check-config` with the pod's secrets as files and variables.
Also: hadolint on the Dockerfiles, `docker-compose config` of
deploy/compose.yaml, and the binary run as uid 65532 in a root holding only
Debian's libc6, libgcc-s1 and ca-certificates (the image's runtime base).

Usage: check.py --pushgate PATH_TO_BINARY   (tests/run.sh installs the tools
in tests/chart/.venv; `cargo test chart` runs this through the test suite).
"""

import argparse
import base64
import copy
import http.server
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import threading

import helm_python as helm
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "pushgate"
FIXTURES = ROOT / "tests" / "chart" / "fixtures"
# The chart's kubeVersion floor and the newest schemas kubernetes-validate has.
KUBE_VERSIONS = ["1.30.0", "1.37.0"]
RELEASE, NAMESPACE = "pg", "push"

FIXTURE_TEXT = {
    "__APNS_KEY__": (FIXTURES / "apns-test-key.p8").read_text(),
    "__FCM_SERVICE_ACCOUNT__": (FIXTURES / "fcm-service-account.json").read_text(),
}
# What existing Secrets (made outside the chart) hold, by (name, key).
EXISTING = {
    ("xmpp-component", "secret"): "component-secret-from-an-existing-secret",
    ("redis-auth", "password"): "redis-password-from-an-existing-secret",
    ("pushgate-cluster", "secret"): "cluster-secret-from-an-existing-secret",
    ("apns-key", "AuthKey.p8"): FIXTURE_TEXT["__APNS_KEY__"],
    ("fcm-service-account", "service-account.json"): FIXTURE_TEXT["__FCM_SERVICE_ACCOUNT__"],
    ("pushgate-peer-tls", "ca.crt"): (FIXTURES / "ca.crt").read_text(),
    ("pushgate-peer-tls", "tls.crt"): (FIXTURES / "tls.crt").read_text(),
    ("pushgate-peer-tls", "tls.key"): (FIXTURES / "tls.key").read_text(),
    ("xmpp-ca", "ca.crt"): (FIXTURES / "ca.crt").read_text(),
    ("redis-client-tls", "ca.crt"): (FIXTURES / "ca.crt").read_text(),
    ("redis-client-tls", "tls.crt"): (FIXTURES / "tls.crt").read_text(),
    ("redis-client-tls", "tls.key"): (FIXTURES / "tls.key").read_text(),
}

failures = []


def fail(case, message):
    failures.append(f"{case}: {message}")
    print(f"FAIL {case}: {message}", flush=True)


def substitute(value):
    """The values with fixture placeholders replaced by the fixtures."""
    if isinstance(value, dict):
        return {k: substitute(v) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v) for v in value]
    if isinstance(value, str):
        return FIXTURE_TEXT.get(value, value)
    return value


def deep_merge(base, over):
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def render(chart, values):
    """The rendered documents (hooks included), by kind and name."""
    files = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = []
    for path, text in sorted(files.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append((path, doc))
    return files, docs


def find(docs, kind, suffix=""):
    return [d for _, d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]


def validate_manifests(case, files, docs, workdir):
    """kubernetes-validate --strict at each version; CRDs are skipped (no
    schema). Returns the rendered text as written, for yamllint."""
    out = workdir / f"{case}.yaml"
    builtin = [d for _, d in docs if d["apiVersion"] != "monitoring.coreos.com/v1"]
    out.write_text(yaml.safe_dump_all(builtin, sort_keys=False))
    raw = workdir / f"{case}-rendered.yaml"
    raw.write_text(
        "".join(f"---\n# Source: {p}\n{t.strip()}\n" for p, t in sorted(files.items()) if t.strip() and not p.endswith("NOTES.txt"))
    )
    for version in KUBE_VERSIONS:
        r = subprocess.run(
            [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", version, "--quiet", str(out)],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            fail(case, f"kubernetes-validate {version}: {r.stdout.strip()} {r.stderr.strip()}")
    return raw


def secret_value(docs, name, key):
    for s in find(docs, "Secret"):
        if s["metadata"]["name"] == name and key in s.get("data", {}):
            return base64.b64decode(s["data"][key]).decode()
    return EXISTING.get((name, key))


def check_shapes(case, values, docs):
    deployments = find(docs, "Deployment")
    if len(deployments) != 1:
        fail(case, f"{len(deployments)} Deployments")
        return
    pod = deployments[0]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    grace = values["shutdownGraceSeconds"] + values["preStopSleepSeconds"]
    if pod["terminationGracePeriodSeconds"] <= grace:
        fail(case, "terminationGracePeriodSeconds does not cover preStop + the gateway's deadline")
    sc = container["securityContext"]
    if not (sc.get("readOnlyRootFilesystem") and sc.get("capabilities", {}).get("drop") == ["ALL"]):
        fail(case, "container securityContext is not locked down")
    if not pod["securityContext"].get("runAsNonRoot"):
        fail(case, "pod may run as root")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if probe not in container:
            fail(case, f"no {probe}")
    clustered = values["store"]["backend"] == "redis"
    internal = find(docs, "Service", "-internal")
    ports = {p["name"] for s in internal for p in s["spec"]["ports"]}
    if not internal or "admin" not in ports or (clustered and "grpc" not in ports):
        fail(case, "no internal Service with the admin (and, in a cluster, gRPC) port")
    public = [s for s in find(docs, "Service") if not s["metadata"]["name"].endswith("-internal")]
    if any(p["targetPort"] != "http" for s in public for p in s["spec"]["ports"]):
        fail(case, "the public Service exposes more than the public HTTP port")
    if clustered != bool(find(docs, "PodDisruptionBudget")) and values["podDisruptionBudget"]["enabled"]:
        fail(case, "PodDisruptionBudget present without a cluster, or missing with one")
    if values["autoscaling"]["enabled"]:
        if not find(docs, "HorizontalPodAutoscaler") or "replicas" in deployments[0]["spec"]:
            fail(case, "autoscaling on, but no HPA or a fixed replica count")
    elif deployments[0]["spec"]["replicas"] != values["replicaCount"]:
        fail(case, "replicas differ from replicaCount")
    monitors = find(docs, "ServiceMonitor")
    if values["metrics"]["serviceMonitor"]["enabled"]:
        endpoints = monitors[0]["spec"]["endpoints"] if monitors else []
        if not endpoints or endpoints[0].get("path") != "/metrics" or endpoints[0].get("port") != "admin":
            fail(case, "ServiceMonitor missing or not scraping the admin port's /metrics")
    elif monitors:
        fail(case, "ServiceMonitor rendered while disabled")
    rules = find(docs, "PrometheusRule")
    if values["metrics"]["prometheusRule"]["enabled"]:
        groups = rules[0]["spec"]["groups"] if rules else []
        alerts = [r.get("alert") for g in groups for r in g.get("rules", [])]
        shipped = yaml.safe_load((ROOT / "deploy" / "prometheus" / "pushgate-rules.yaml").read_text())
        if groups != shipped["groups"] or not alerts:
            fail(case, "the PrometheusRule differs from deploy/prometheus/pushgate-rules.yaml")
    elif rules:
        fail(case, "PrometheusRule rendered while disabled")
    dashboards = find(docs, "ConfigMap", "-dashboard")
    if values["metrics"]["dashboard"]["enabled"]:
        if not dashboards or dashboards[0]["metadata"]["labels"].get("grafana_dashboard") != "1":
            fail(case, "dashboard ConfigMap missing or without the sidecar label")
        else:
            board = json.loads(dashboards[0]["data"]["pushgate.json"])
            exprs = " ".join(t["expr"] for p in board["panels"] for t in p.get("targets", []))
            for name in re.findall(r"pushgate_[a-z_]+", exprs):
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                if base not in KNOWN_METRICS:
                    fail(case, f"the dashboard queries {name}, which the gateway does not export")
    # Nothing secret in a ConfigMap.
    config_text = json.dumps([c.get("data") for c in find(docs, "ConfigMap")])
    for (name, key), text in EXISTING.items():
        if text.strip() and text.strip() in config_text:
            fail(case, f"secret {name}/{key} appears in a ConfigMap")
    for word in ("component-secret-from-values", "redis-password-from-values", "BEGIN PRIVATE KEY"):
        if word in config_text:
            fail(case, f"{word!r} appears in a ConfigMap")
    tests = [d for _, d in docs if d["kind"] == "Pod"]
    if values["tests"]["enabled"] and not any(
        t["metadata"].get("annotations", {}).get("helm.sh/hook") == "test" for t in tests
    ):
        fail(case, "no helm test pod")


def check_config(case, docs, pushgate, workdir):
    """The rendered TOML passes `pushgate check-config`, with the pod's
    mounts as files under a temp root and its variables set."""
    root = workdir / f"{case}-root"
    configmap = [c for c in find(docs, "ConfigMap") if "pushgate.toml" in c.get("data", {})][0]
    pod = find(docs, "Deployment")[0]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        target = root / mount["mountPath"].lstrip("/")
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            target.parent.mkdir(parents=True, exist_ok=True)
            toml = configmap["data"]["pushgate.toml"]
            toml = toml.replace('"/etc/pushgate/', f'"{root}/etc/pushgate/')
            toml = toml.replace('"/var/lib/pushgate/', f'"{root}/var/lib/pushgate/')
            target.write_text(toml)
        elif "secret" in volume or "projected" in volume:
            target.mkdir(parents=True, exist_ok=True)
            if "secret" in volume:
                sources = [{"name": volume["secret"]["secretName"], "items": volume["secret"].get("items")}]
            else:
                sources = [src["secret"] for src in volume["projected"]["sources"]]
            for source in sources:
                name = source["name"]
                items = source.get("items") or [{"key": k, "path": k} for (n, k) in EXISTING if n == name]
                for item in items:
                    value = secret_value(docs, name, item["key"])
                    if value is None:
                        fail(case, f"volume {mount['name']}: no {name}/{item['key']}")
                        return
                    (target / item["path"]).write_text(value)
        else:
            target.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "fieldRef" in var.get("valueFrom", {}):
            path = var["valueFrom"]["fieldRef"]["fieldPath"]
            env[var["name"]] = {"metadata.name": f"{RELEASE}-pushgate-7d9f-x2k4", "status.podIP": "10.0.0.7"}[path]
        else:
            fail(case, f"env {var['name']}: secrets are mounted as files, not passed as variables")
            return
    env["PUSHGATE_CONFIG"] = str(root / env["PUSHGATE_CONFIG"].lstrip("/"))
    r = subprocess.run([pushgate, "check-config"], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        fail(case, f"pushgate check-config: {r.stdout.strip()} {r.stderr.strip()}")
    else:
        print(f"ok   {case}: check-config: {r.stdout.strip().splitlines()[-1]}")


# Values the schema must refuse, each with why.
REFUSED = [
    ("a wrong type", {"replicaCount": "3"}),
    ("an unknown top-level key", {"replicas": 3}),
    ("an unknown nested key", {"store": {"redis": {"uri": "redis://r:6379"}}}),
    ("several replicas without Redis", {"replicaCount": 3}),
    ("autoscaling without Redis", {"autoscaling": {"enabled": True}}),
    ("Redis without a server", {"store": {"backend": "redis"}}),
    ("seed nodes without cluster: true", {"store": {"backend": "redis", "redis": {"urls": ["redis://a:6379"]}}}),
    ("an unknown backend", {"store": {"backend": "postgres"}}),
    ("an OTLP endpoint without a scheme", {"metrics": {"otlp": {"endpoint": "otel-collector:4317"}}}),
    ("a TLS server option misspelt", {"component": {"servers": [{"host": "x", "port": 5347, "tsl": True}]}}),
    ("a short cluster secret", {"store": {"backend": "redis", "redis": {"url": "redis://r:6379"}}, "cluster": {"secret": "short"}}),
    ("an APNs provider without a topic", {"providers": [{"id": "a", "kind": "apns", "teamId": "T", "keyId": "K", "credential": "x"}]}),
    ("a provider without a credential", {"providers": [{"id": "f", "kind": "fcm"}]}),
    ("an unknown provider kind", {"providers": [{"id": "w", "kind": "webpush", "credential": "x"}]}),
    ("the shutdown deadline in config.delivery", {"config": {"delivery": {"shutdown_grace_s": 5}}}),
    ("mutual TLS without its Secret", {"store": {"backend": "redis", "redis": {"url": "redis://r:6379"}}, "cluster": {"tls": {"enabled": True}}}),
    ("a component server without a port", {"component": {"servers": [{"host": "x"}]}}),
]


def check_refusals(chart, defaults):
    for why, over in REFUSED:
        try:
            chart.validate_schema(deep_merge(defaults, over))
        except helm.HelmError as e:
            print(f"ok   refused {why}: {' '.join(str(e).split())[:160]}")
            continue
        fail("schema", f"accepted {why}: {over}")


def check_runtime_rootfs(pushgate, workdir):
    """The image's runtime stage holds only glibc, libgcc and CA certificates
    (distroless cc). The binary is run in a root made of exactly Debian's
    libc6, libgcc-s1 and ca-certificates packages, as uid 65532: --version,
    and a probe of a local HTTP server. Base images cannot be pulled here,
    so this stands in for building the image."""
    root = workdir / "rootfs"
    debs = workdir / "debs"
    debs.mkdir()
    r = subprocess.run(["apt-get", "download", "libc6", "libgcc-s1", "ca-certificates"], cwd=debs, capture_output=True, text=True)
    if r.returncode != 0:
        fail("rootfs", f"apt-get download failed (needs Debian's package lists): {r.stderr.strip()}")
        return
    for deb in debs.glob("*.deb"):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    (root / "usr/local/bin").mkdir(parents=True, exist_ok=True)
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
    (root / "etc/group").write_text("root:x:0:\nnonroot:x:65532:\n")
    binary = root / "usr/local/bin/pushgate"
    binary.write_bytes(pathlib.Path(pushgate).read_bytes())
    binary.chmod(0o755)
    prefix = ["chroot", "--userspec=65532:65532", str(root)]
    if os.geteuid() != 0:
        prefix = ["unshare", "--user", "--map-root-user", "chroot", str(root)]
    r = subprocess.run([*prefix, "/usr/local/bin/pushgate", "--version"], capture_output=True, text=True)
    if r.returncode != 0 or not r.stdout.startswith("pushgate "):
        fail("rootfs", f"pushgate --version in a libc6+libgcc-s1 root: {r.stdout.strip()} {r.stderr.strip()}")
        return
    server = http.server.HTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/readyz"
    r = subprocess.run([*prefix, "/usr/local/bin/pushgate", "probe", url], capture_output=True, text=True)
    server.server_close()
    if r.returncode != 0:
        fail("rootfs", f"pushgate probe in the minimal root: {r.stdout.strip()} {r.stderr.strip()}")
        return
    print(f"ok   minimal root (libc6, libgcc-s1, ca-certificates; uid 65532): {r.stdout.strip()}")


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def check_copies():
    """The chart's copies of the dashboard and the alert rules (Helm reads
    only files inside the chart) are the ones in deploy/."""
    for copy_in_chart, original in (
        (CHART / "files" / "dashboard.json", ROOT / "deploy" / "grafana" / "pushgate.json"),
        (CHART / "files" / "pushgate-rules.yaml", ROOT / "deploy" / "prometheus" / "pushgate-rules.yaml"),
    ):
        if copy_in_chart.read_bytes() != original.read_bytes():
            fail("copies", f"{copy_in_chart.relative_to(ROOT)} differs from {original.relative_to(ROOT)}: copy it over")
        else:
            print(f"ok   {copy_in_chart.relative_to(ROOT)} is {original.relative_to(ROOT)}")


def check_compose():
    """deploy/compose.yaml is a valid Compose file (`docker compose config`,
    or Debian's docker-compose, which tests/run.sh installs), and its Prosody
    has the push settings of deploy/xmpp/prosody.cfg.lua (the tested one)."""
    tested = (ROOT / "deploy" / "xmpp" / "prosody.cfg.lua").read_text().splitlines()
    stack = (ROOT / "deploy" / "compose" / "prosody" / "prosody.cfg.lua").read_text().splitlines()
    for line in tested:
        setting = line.strip()
        if setting.startswith(("push_", "component_conflict_resolve", '"cloud_notify"')) and setting not in (s.strip() for s in stack):
            fail("compose", f"the stack's Prosody lacks {setting!r} of deploy/xmpp/prosody.cfg.lua")
    compose = ROOT / "deploy" / "compose.yaml"
    for command in (["docker", "compose"], ["docker-compose"]):
        try:
            if subprocess.run([*command, "version"], capture_output=True).returncode != 0:
                continue
        except FileNotFoundError:
            continue
        r = subprocess.run([*command, "-f", str(compose), "config", "-q"], capture_output=True, text=True)
        if r.returncode == 0:
            print(f"ok   deploy/compose.yaml: {' '.join(command)} config")
        else:
            fail("compose", r.stdout.strip() + r.stderr.strip())
        return
    fail("compose", "neither `docker compose` nor `docker-compose` is installed (tests/run.sh installs Debian's docker-compose)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pushgate", required=True)
    args = parser.parse_args()
    helm.disable_logging()
    report = helm.lint(str(CHART), strict=True)
    for m in report.get("messages", []):
        if m["severity"] >= 2:
            fail("lint", f"{m['path']}: {m['error']}")
    for e in report.get("errors", []) or []:
        fail("lint", e)
    chart = helm.Chart.load(str(CHART))
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    cases = [("defaults", {})] + [
        (p.stem.replace("-values", ""), yaml.safe_load(p.read_text()) or {})
        for p in sorted((CHART / "ci").glob("*-values.yaml"))
    ]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = pathlib.Path(tmp)
        rendered = []
        for case, over in cases:
            values = substitute(over)
            merged = deep_merge(defaults, values)
            try:
                chart.validate_schema(merged)
                files, docs = render(chart, values)
            except helm.HelmError as e:
                fail(case, f"does not render: {e}")
                continue
            print(f"ok   {case}: rendered {len(docs)} documents")
            rendered.append(validate_manifests(case, files, docs, workdir))
            check_shapes(case, merged, docs)
            check_config(case, docs, args.pushgate, workdir)
        check_refusals(chart, defaults)
        lint_targets = [str(CHART / "values.yaml"), str(CHART / "Chart.yaml"), str(CHART / "ci")]
        lint_targets += [str(p) for p in rendered]
        r = subprocess.run(
            [sys.executable, "-m", "yamllint", "-c", str(ROOT / "tests" / "chart" / "yamllint.yaml"), *lint_targets],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            fail("yamllint", r.stdout.strip())
    table = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "chart" / "values_table.py"), str(CHART / "values.yaml")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if table.strip() not in (CHART / "README.md").read_text():
        fail("README", "the values table is not current: regenerate it with tests/chart/values_table.py")
    else:
        print("ok   helm/pushgate/README.md: values table current")
    hadolint = pathlib.Path(sys.executable).parent / "hadolint"
    for dockerfile in (ROOT / "deploy" / "Dockerfile", ROOT / "deploy" / "compose" / "prosody" / "Dockerfile"):
        r = subprocess.run([str(hadolint), "--no-color", str(dockerfile)], capture_output=True, text=True)
        if r.returncode != 0:
            fail("hadolint", r.stdout.strip() + r.stderr.strip())
        else:
            print(f"ok   {dockerfile.relative_to(ROOT)}: hadolint")
    check_copies()
    check_compose()
    with tempfile.TemporaryDirectory() as tmp:
        check_runtime_rootfs(args.pushgate, pathlib.Path(tmp))
    if failures:
        print(f"\n{len(failures)} chart check(s) failed", file=sys.stderr)
        return 1
    print("chart: all checks passed")
    return 0


KNOWN_METRICS = set()


def known_metrics():
    """The Prometheus names of the instruments the gateway's source makes:
    `Kind::new(meter, spec("pushgate.x.y", help, unit, labels))` or
    `meter.u64_observable_counter("pushgate.x.y")`, named as the
    OpenTelemetry Prometheus reader names them (dots to underscores, `_seconds`
    for unit s, `_total` for counters)."""
    names = set()
    for path in (ROOT / "src").rglob("*.rs"):
        text = path.read_text()
        for kind, name, unit in re.findall(
            r'(CounterVec|GaugeVec|HistogramVec|KeyedGauge|Gauge|Counter)::new\(\s*\w+,\s*spec\(\s*"(pushgate\.[a-z_.]+)",\s*"(?:[^"\\]|\\.)*",\s*"(s?)"',
            text,
        ):
            base = name.replace(".", "_") + ("_seconds" if unit == "s" else "")
            names.add(base + ("_total" if kind.startswith("Counter") else ""))
        for name in re.findall(r'observable_counter\(\s*"(pushgate\.[a-z_.]+)"', text):
            names.add(name.replace(".", "_") + "_total")
    return names


if __name__ == "__main__":
    KNOWN_METRICS.update(known_metrics())
    sys.exit(main())
