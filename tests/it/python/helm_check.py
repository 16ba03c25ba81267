"""Checks the Helm chart in helm/sluice with Helm's own Go SDK (helm-python-sdk): no helm binary
and no cluster are needed. Run by tests/it/helm.rs, which starts the real binary with what the
chart renders.

  - `helm lint --strict` with the default values and with ci/full-values.yaml, for the oldest
    and the newest Kubernetes version checked (warnings fail);
  - render both, and validate every manifest with kubernetes-validate against those versions,
    strictly (unknown fields fail). It has no schema for CRDs: the ServiceMonitor's shape is
    checked by hand against the fields of monitoring.coreos.com/v1;
  - the security settings, labels and the config checksum of the workload;
  - the Grafana dashboard: valid JSON, the template variables, and every metric it queries is
    listed in docs/metrics.md and used as its type allows;
  - bad values are refused, by values.schema.json or by the templates, with a message naming
    the field; probes and the scrape use HTTPS exactly when their port serves TLS;
  - the TOML written into the ConfigMap reads back (Python's tomllib) as exactly the values
    given, for sluice.example.toml and for awkward strings and numbers.

Problems go to stderr (exit 1). On success the last line of stdout is one JSON object:
{"kube_versions": [...], "renders": {"default"|"full": {"values": merged values,
"manifests": [objects]}}}.
"""

import copy
import hashlib
import json
import re
import sys
import tomllib
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "helm" / "sluice"
RELEASE = "ingest"
NAMESPACE = "events"
# The oldest Kubernetes the chart supports (Chart.yaml's kubeVersion: the preStop `sleep`
# action is on by default from 1.30) and the newest kubernetes-validate 1.37.0 knows.
KUBE_VERSIONS = ["1.30", "1.37"]

problems: list[str] = []


def problem(msg: str) -> None:
    problems.append(msg)


def log(msg: str) -> None:
    print(f"helm_check: {msg}", file=sys.stderr)


# The one choice the chart will not make for a release: how clients authenticate. Renders of
# partial values get this unless they bring a key source (or a mode) of their own.
OPEN = {"config": {"auth": {"mode": "disabled"}}}


def with_auth(values: dict) -> dict:
    auth = (values.get("config") or {}).get("auth") or {}
    secrets = values.get("secrets") or {}
    if any(auth.get(k) for k in ("mode", "keys", "jwks_urls", "api_keys", "api_keys_file", "client_certs")) \
            or secrets.get("jwtKeys") or (secrets.get("apiKeys") or {}).get("secretName"):
        return values
    out = json.loads(json.dumps(values))
    out.setdefault("config", {}).setdefault("auth", {})["mode"] = "disabled"
    return out


def load_values(name: str) -> dict:
    if name == "default":
        # The defaults, and the choice the chart requires.
        return OPEN
    return yaml.safe_load((CHART / "ci" / "full-values.yaml").read_text())


def manifests(rendered: dict[str, str]) -> list[dict]:
    out = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {}).setdefault("annotations", {})
                if not doc["metadata"]["annotations"]:
                    del doc["metadata"]["annotations"]
                out.append(doc)
    return out


def lint(name: str, values: dict) -> None:
    for v in KUBE_VERSIONS:
        report = helm.lint(CHART, values or None, strict=True, kube_version=f"v{v}.0")
        for m in report["messages"]:
            # Severity: 1 info ("icon is recommended"), 2 warning, 3 error.
            if m["severity"] >= 2:
                problem(f"lint {name} (Kubernetes {v}): {m['path']}: {m['error'].strip()}")
        for e in report["errors"]:
            problem(f"lint {name} (Kubernetes {v}): {e.strip()}")


# monitoring.coreos.com/v1 ServiceMonitor: the fields this chart may write.
SM_SPEC = {"selector", "namespaceSelector", "endpoints", "jobLabel", "targetLabels", "podTargetLabels"}
SM_ENDPOINT = {"port", "path", "scheme", "interval", "scrapeTimeout", "relabelings", "metricRelabelings",
               "honorLabels", "tlsConfig"}
# The CRD's pattern for durations.
PROM_DURATION = re.compile(r"^(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?$")


def prom_seconds(d: str) -> float:
    units = {"y": 31536000, "w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(int(n) * units[u] for n, u in re.findall(r"([0-9]+)(ms|y|w|d|h|m|s)", d))


def check_service_monitor(where: str, sm: dict) -> None:
    """kubernetes-validate has no CRD schemas; this is the CRD's shape for what we use."""
    if sm.get("apiVersion") != "monitoring.coreos.com/v1":
        problem(f"{where}: apiVersion {sm.get('apiVersion')}")
    if set(sm) - {"apiVersion", "kind", "metadata", "spec"}:
        problem(f"{where}: unknown top-level fields {set(sm) - {'apiVersion', 'kind', 'metadata', 'spec'}}")
    # Its metadata is an ObjectMeta like any other: borrow a ConfigMap's schema for it.
    for v in KUBE_VERSIONS:
        validate(f"{where} metadata", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": sm["metadata"]}, v)
    spec = sm.get("spec", {})
    if set(spec) - SM_SPEC:
        problem(f"{where}: unknown spec fields {set(spec) - SM_SPEC}")
    labels = spec.get("selector", {}).get("matchLabels")
    if not labels or not all(isinstance(k, str) and isinstance(x, str) for k, x in labels.items()):
        problem(f"{where}: spec.selector.matchLabels must be a non-empty map of strings")
    ns = spec.get("namespaceSelector", {})
    if set(ns) - {"matchNames", "any"} or not all(isinstance(n, str) for n in ns.get("matchNames", [])):
        problem(f"{where}: spec.namespaceSelector {ns}")
    endpoints = spec.get("endpoints")
    if not isinstance(endpoints, list) or not endpoints:
        problem(f"{where}: spec.endpoints must be a non-empty list")
        return
    for i, ep in enumerate(endpoints):
        if set(ep) - SM_ENDPOINT:
            problem(f"{where}: endpoints[{i}] unknown fields {set(ep) - SM_ENDPOINT}")
        if not isinstance(ep.get("port"), str) or not ep["port"]:
            problem(f"{where}: endpoints[{i}].port must name a Service port")
        if not str(ep.get("path", "/metrics")).startswith("/"):
            problem(f"{where}: endpoints[{i}].path {ep.get('path')}")
        if ep.get("scheme", "http") not in ("http", "https"):
            problem(f"{where}: endpoints[{i}].scheme {ep.get('scheme')}")
        for field in ("interval", "scrapeTimeout"):
            if field in ep and not (isinstance(ep[field], str) and PROM_DURATION.match(ep[field]) and ep[field]):
                problem(f"{where}: endpoints[{i}].{field} {ep[field]!r} is not a Prometheus duration")
        if "interval" in ep and "scrapeTimeout" in ep and prom_seconds(ep["scrapeTimeout"]) > prom_seconds(ep["interval"]):
            problem(f"{where}: endpoints[{i}].scrapeTimeout is longer than its interval")


def validate(where: str, obj: dict, version: str) -> None:
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        problem(f"{where} (Kubernetes {version}): {path}: {e.message[:300]}")
    except kubernetes_validate.SchemaNotFoundError as e:
        problem(f"{where}: {e.message}")


def check_manifests(name: str, objs: list[dict], rendered: dict[str, str]) -> None:
    for obj in objs:
        where = f"{name}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        if obj["kind"] == "ServiceMonitor":
            check_service_monitor(where, obj)
        else:
            for v in KUBE_VERSIONS:
                validate(where, obj, v)
        labels = obj["metadata"].get("labels", {})
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                    "app.kubernetes.io/managed-by", "app.kubernetes.io/part-of", "helm.sh/chart"):
            if key not in labels:
                problem(f"{where}: no {key} label")

    workloads = [o for o in objs if o["kind"] in ("Deployment", "StatefulSet")]
    if len(workloads) != 1:
        problem(f"{name}: {len(workloads)} workloads rendered")
        return
    w = workloads[0]
    pod = w["spec"]["template"]["spec"]
    psc = pod.get("securityContext", {})
    expect = {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}}
    for k, v in expect.items():
        if psc.get(k) != v:
            problem(f"{name}: pod securityContext.{k} is {psc.get(k)!r}, want {v!r}")
    for c in pod["containers"]:
        sc = c.get("securityContext", {})
        for k, v in {"runAsNonRoot": True, "runAsUser": 65532, "readOnlyRootFilesystem": True,
                     "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                     "seccompProfile": {"type": "RuntimeDefault"}}.items():
            if sc.get(k) != v:
                problem(f"{name}: container {c['name']} securityContext.{k} is {sc.get(k)!r}, want {v!r}")
        res = c.get("resources", {})
        if not res.get("requests") or not res.get("limits", {}).get("memory"):
            problem(f"{name}: container {c['name']} needs resource requests and a memory limit")
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        if "/var/lib/sluice" not in mounts:
            problem(f"{name}: nothing writable is mounted at /var/lib/sluice (the root file system is read-only)")
    # Config changes roll the pods: the annotation is the ConfigMap template's hash.
    cm_text = next(t for p, t in rendered.items() if p.endswith("templates/configmap.yaml"))
    checksum = w["spec"]["template"]["metadata"].get("annotations", {}).get("checksum/config")
    if checksum != hashlib.sha256(cm_text.encode()).hexdigest():
        problem(f"{name}: checksum/config does not hash the rendered ConfigMap")


def expect_kinds(name: str, objs: list[dict], want: dict[str, int]) -> None:
    have: dict[str, int] = {}
    for o in objs:
        have[o["kind"]] = have.get(o["kind"], 0) + 1
    if have != want:
        problem(f"{name}: rendered {have}, expected {want}")


def documented_metrics() -> dict[str, str]:
    """name -> type, from the table in docs/metrics.md."""
    text = (ROOT / "docs" / "metrics.md").read_text()
    found = dict(re.findall(r"^\| `(sluice_[a-z0-9_]+)` \| (counter|gauge|histogram) \|", text, re.M))
    if len(found) < 20:
        problem(f"docs/metrics.md: only {len(found)} metrics parsed from its table")
    return found


def check_dashboard() -> dict:
    path = CHART / "dashboards" / "sluice.json"
    try:
        dash = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        problem(f"{path}: not JSON: {e}")
        return {}
    metrics = documented_metrics()
    variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problem("dashboard: no `datasource` variable of type datasource (prometheus)")
    for var in ("namespace", "instance"):
        if var not in variables:
            problem(f"dashboard: no `{var}` template variable")
    for v in variables.values():
        if v["type"] == "query" and v.get("datasource", {}).get("uid") != "${datasource}":
            problem(f"dashboard: variable {v['name']} does not query ${{datasource}}")
    if not dash.get("uid") or not dash.get("title"):
        problem("dashboard: uid and title are required for provisioning")

    def all_panels(ps):
        for p in ps:
            yield p
            yield from all_panels(p.get("panels", []))

    panels = list(all_panels(dash.get("panels", [])))
    ids = [p["id"] for p in panels]
    if len(ids) != len(set(ids)):
        problem("dashboard: panel ids are not unique")
    used = set()
    exprs = 0
    for p in panels:
        gp = p.get("gridPos", {})
        if gp.get("x", 0) + gp.get("w", 0) > 24:
            problem(f"dashboard: panel {p['title']!r} is wider than the grid")
        if p["type"] == "row":
            continue
        if p.get("datasource", {}).get("uid") != "${datasource}":
            problem(f"dashboard: panel {p['title']!r} does not use ${{datasource}}")
        for t in p.get("targets", []):
            expr = t.get("expr", "")
            exprs += 1
            if t.get("datasource", {}).get("uid") != "${datasource}":
                problem(f"dashboard: a query of {p['title']!r} does not use ${{datasource}}")
            if expr.count("(") != expr.count(")") or expr.count("{") != expr.count("}"):
                problem(f"dashboard: unbalanced brackets in {expr!r}")
            if '$namespace' not in expr or '$instance' not in expr:
                problem(f"dashboard: {p['title']!r} ignores the namespace/instance variables: {expr!r}")
            for token in re.findall(r"sluice_[a-z0-9_]+", expr):
                base = re.sub(r"_(bucket|sum|count)$", "", token)
                if base != token and metrics.get(base) == "histogram":
                    used.add(base)
                    if token.endswith("_bucket") and not re.search(r"histogram_quantile\(", expr):
                        problem(f"dashboard: {token} outside histogram_quantile in {expr!r}")
                    if token.endswith("_bucket") and not re.search(r"by \(le\b", expr):
                        problem(f"dashboard: {token} is not aggregated by le in {expr!r}")
                    continue
                if token not in metrics:
                    problem(f"dashboard: {token} (in {p['title']!r}) is not in docs/metrics.md")
                    continue
                used.add(token)
                kind = metrics[token]
                if kind == "histogram":
                    problem(f"dashboard: histogram {token} used without _bucket/_sum/_count")
                if kind == "counter" and not re.search(r"(rate|increase)\(" + token + r"\b", expr):
                    problem(f"dashboard: counter {token} used without rate()/increase()")
    for wanted in ("sluice_http_requests_total", "sluice_http_request_duration_seconds",
                   "sluice_events_accepted_total", "sluice_events_rejected_total",
                   "sluice_publish_duration_seconds", "sluice_inflight_events", "sluice_demand_events",
                   "sluice_spool_backlog_bytes", "sluice_auth_failures_total"):
        if wanted not in used:
            problem(f"dashboard: no panel shows {wanted}")
    log(f"dashboard: {len(panels)} panels, {exprs} queries over {len(used)} documented metrics")
    return dash


# Values the chart must refuse, and a piece of the message that names the problem.
BAD_VALUES = [
    ("a Kafka file both in config and from secrets.kafka",
     {"config": {"kafka": {"ssl_ca_file": "/ca.pem"}},
      "secrets": {"kafka": {"secretName": "k", "caKey": "ca.crt"}}}, "config.kafka.ssl_ca_file and secrets.kafka.caKey"),
    ("secrets.kafka naming no key",
     {"secrets": {"kafka": {"secretName": "k"}}}, "secrets.kafka.secretName"),
    ("a string replicaCount", {"replicaCount": "3"}, "/replicaCount"),
    ("an unknown top-level key", {"replicas": 3}, "replicas"),
    ("a misspelt config section", {"config": {"sevrer": {"listen": "0.0.0.0:8080"}}}, "sevrer"),
    ("an unknown server field", {"config": {"server": {"port": 8080}}}, "port"),
    ("a duration without unit", {"config": {"server": {"drain_delay": "5"}}}, "/config/server/drain_delay"),
    ("listening on loopback", {"config": {"server": {"listen": "127.0.0.1:8080"}}}, "/config/server/listen"),
    ("an unknown sink", {"config": {"sink": {"kind": "carrier-pigeon"}}}, "/config/sink/kind"),
    ("an unknown JWT algorithm",
     {"secrets": {"jwtKeys": [{"secretName": "s", "key": "k", "algorithm": "none"}]}}, "/secrets/jwtKeys/0/algorithm"),
    ("a bad ingress pathType", {"ingress": {"enabled": True, "hosts": [{"host": "a", "paths": [{"path": "/", "pathType": "Any"}]}]}},
     "pathType"),
    ("a grace period the drain does not fit in", {"termination": {"terminationGracePeriodSeconds": 35}},
     "termination.terminationGracePeriodSeconds (35) must exceed"),
    ("a shutdown grace shorter than drain + delivery timeout",
     {"config": {"server": {"shutdown_grace": "12s"}, "sink": {"kind": "kafka"}, "kafka": {"brokers": ["k:9092"]}}},
     "config.server.shutdown_grace"),
    ("ack on an ephemeral spool", {"config": {"spool": {"enabled": True}, "routes": {"ack": "spool"}}},
     "persistence.enabled is false"),
    ("a rule acking on an ephemeral spool",
     {"config": {"spool": {"enabled": True}, "routes": {"rules": [{"type": "*", "topic": "t", "ack": "spool"}]}}},
     "persistence.enabled is false"),
    ("a chart-owned variable in extraEnv", {"extraEnv": [{"name": "SLUICE_SERVER__LISTEN", "value": "0.0.0.0:1"}]},
     "extraEnv: SLUICE_SERVER__LISTEN"),
    ("the file sink writing outside the state volume", {"config": {"file": {"dir": "/data"}}}, "config.file.dir"),
    ("a SQLite registry outside the state volume", {"config": {"registry": {"url": "sqlite:///tmp/r.db"}}},
     "config.registry.url"),
    ("the admin port on the ingest port", {"config": {"server": {"admin_listen": "0.0.0.0:8080"}}},
     "config.server.admin_listen"),
    ("a demand target at the in-flight bound",
     {"autoscaling": {"enabled": True, "demand": {"enabled": True, "targetAverageValue": 20000}}},
     "autoscaling.demand.targetAverageValue"),
    ("both PDB bounds", {"podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}}, "not both"),
    ("an API-key file set twice",
     {"config": {"auth": {"api_keys_file": "/x"}}, "secrets": {"apiKeys": {"secretName": "s", "key": "k"}}},
     "config.auth.api_keys_file"),
    ("a list mixing tables and values", {"config": {"limits": {"odd": [1, {"a": 1}]}}}, "TOML"),
    ("client certificates required where the kubelet probes",
     {"config": {"tls": {"cert_file": "/c.pem", "key_file": "/k.pem", "client_ca_file": "/ca.pem",
                         "client_auth": "required"}}}, "config.tls.client_auth"),
]


def check_tls_schemes(chart) -> None:
    """Probes and the scrape speak HTTPS exactly when the port they use serves TLS."""
    tls = {"cert_file": "/etc/sluice/tls/tls.crt", "key_file": "/etc/sluice/tls/tls.key"}
    admin = {"admin_listen": "0.0.0.0:9090"}
    cases = [
        ("no TLS", {}, "HTTP"),
        ("TLS on the ingest port, probed there", {"tls": tls}, "HTTPS"),
        ("TLS on the ingest port, probes on a plain admin port", {"tls": tls, "server": admin}, "HTTP"),
        ("TLS on both ports", {"tls": {**tls, "admin": True}, "server": admin}, "HTTPS"),
        ("client certificates required on the ingest port only",
         {"tls": {**tls, "client_ca_file": "/etc/sluice/tls/ca.pem", "client_auth": "required"}, "server": admin}, "HTTP"),
    ]
    for what, config, scheme in cases:
        objs = manifests(chart.render(with_auth({"config": config, "serviceMonitor": {"enabled": True}}),
                                      name=RELEASE, namespace=NAMESPACE))
        w = next(o for o in objs if o["kind"] in ("Deployment", "StatefulSet"))
        c = w["spec"]["template"]["spec"]["containers"][0]
        got = {c[p]["httpGet"].get("scheme") for p in ("startupProbe", "livenessProbe", "readinessProbe")}
        sm = next(o for o in objs if o["kind"] == "ServiceMonitor")
        if got != {scheme} or sm["spec"]["endpoints"][0]["scheme"] != scheme.lower():
            problem(f"TLS ({what}): probes {got}, scrape {sm['spec']['endpoints'][0]['scheme']}, want {scheme}")


def check_kafka_secrets(chart) -> None:
    """secrets.kafka mounts the keys it names and points config.kafka's *_file fields at them."""
    values = {
        "config": {"sink": {"kind": "kafka"},
                   "kafka": {"brokers": ["b-1.msk.example:9096"], "security_protocol": "sasl_ssl",
                             "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "sluice"}},
        "secrets": {"kafka": {"secretName": "sluice-kafka", "saslPasswordKey": "password",
                              "caKey": "ca.crt"}},
    }
    objs = manifests(chart.render(with_auth(values), name=RELEASE, namespace=NAMESPACE))
    cm = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-config"))
    kafka = tomllib.loads(cm["data"]["sluice.toml"])["kafka"]
    want = {"sasl_password_file": "/etc/sluice/secrets/kafka/password",
            "ssl_ca_file": "/etc/sluice/secrets/kafka/ca.crt"}
    for field, path in want.items():
        if kafka.get(field) != path:
            problem(f"secrets.kafka: config.kafka.{field} is {kafka.get(field)!r}, want {path!r}")
    for field in ("ssl_cert_file", "ssl_key_file", "oauth_client_secret_file"):
        if field in kafka:
            problem(f"secrets.kafka: config.kafka.{field} set though its key is empty")
    w = next(o for o in objs if o["kind"] in ("Deployment", "StatefulSet"))
    pod = w["spec"]["template"]["spec"]
    vol = next((v for v in pod["volumes"] if v["name"] == "kafka-secrets"), None)
    items = vol and [i["key"] for i in vol["secret"]["items"]]
    if not vol or vol["secret"]["secretName"] != "sluice-kafka" or items != ["password", "ca.crt"]:
        problem(f"secrets.kafka: volume {vol}")
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    m = mounts.get("kafka-secrets")
    if not m or m["mountPath"] != "/etc/sluice/secrets/kafka" or not m.get("readOnly"):
        problem(f"secrets.kafka: mount {m}")


def check_bad_values(chart) -> None:
    # No key source and no mode: refused, naming both ways out.
    try:
        chart.render({}, name=RELEASE, namespace=NAMESPACE)
        problem("values without a key source or config.auth.mode were rendered")
    except (helm.HelmValuesError, helm.HelmRenderError) as e:
        if "config.auth.mode" not in str(e) or "secrets.jwtKeys" not in str(e):
            problem(f"values without authentication refused, but the message does not say what to set: {e}")
    for what, values, needle in BAD_VALUES:
        values = with_auth(values)
        try:
            chart.render(values, name=RELEASE, namespace=NAMESPACE)
        except (helm.HelmValuesError, helm.HelmRenderError) as e:
            if needle not in str(e):
                problem(f"bad values ({what}) refused, but the message does not name {needle!r}: {e}")
            continue
        problem(f"bad values ({what}) were rendered: {values}")
    # The schema is what `helm lint` and `helm install` check first.
    try:
        chart.validate_schema({"replicaCount": "3"})
        problem("values.schema.json accepts a string replicaCount")
    except helm.HelmValuesError:
        pass


def same(a, b) -> bool:
    """Equal with the same types all the way down: 1000 and 1000.0 differ (Sluice's integer
    fields refuse floats), as do 1 and True."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def rendered_toml(chart, values: dict) -> dict:
    objs = manifests(chart.render(with_auth(values), name=RELEASE, namespace=NAMESPACE))
    cm = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-config"))
    return tomllib.loads(cm["data"]["sluice.toml"])


def check_toml_round_trip(chart) -> None:
    """What the chart writes into sluice.toml reads back as the values it was given."""
    example = tomllib.loads((ROOT / "sluice.example.toml").read_text())
    awkward = {
        "kafka": {"properties": {"a.b c": 'quote " backslash \\ newline \n tab \t <&> é \u2603',
                                 "queue.buffering.max.messages": "100000"}},
        "limits": {"max_events": 1000, "max_inflight_events": 20000000, "fraction": 0.25, "flag": True,
                   "nested": [[1, 2], [3]], "empty": [], "sizes": ["5MiB", 7]},
        "routes": {"rules": [{"type": "a.*", "topic": "t", "meta": {"k": "v", "n": 2}},
                             {"type": "b", "topic": "u", "ack": "broker"}]},
    }
    for what, config in (("sluice.example.toml", example), ("awkward values", awkward)):
        values = with_auth({"config": config})
        want = chart.merge_values(values)["config"]
        got = rendered_toml(chart, values)
        if not same(got, want):
            problem(f"sluice.toml from {what} does not read back as the values:\n  got  {got}\n  want {want}")
    # A changed config changes the checksum that rolls the pods.
    sums = set()
    for v in ({}, {"config": {"limits": {"max_events": 999}}}):
        objs = manifests(chart.render(with_auth(v), name=RELEASE, namespace=NAMESPACE))
        w = next(o for o in objs if o["kind"] in ("Deployment", "StatefulSet"))
        sums.add(w["spec"]["template"]["metadata"]["annotations"]["checksum/config"])
    if len(sums) != 2:
        problem("changing config does not change checksum/config")


def check_schema_covers_example(chart) -> None:
    """Every field of sluice.example.toml has its entry under config in values.schema.json, so
    a field added to the binary without one fails here rather than going unchecked."""
    example = tomllib.loads((ROOT / "sluice.example.toml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]["config"]

    def walk(node: dict, value, path: str) -> None:
        props = node.get("properties")
        if not isinstance(value, dict) or props is None:
            return  # a leaf, or a free-form map such as kafka.properties
        for key, v in value.items():
            if key not in props:
                problem(f"values.schema.json: config.{path}{key} (in sluice.example.toml) is not described")
            else:
                walk(props[key], v, f"{path}{key}.")

    walk(schema, example, "")


def main() -> int:
    log(f"helm SDK {helm.helm_sdk_version()}, kubernetes-validate {kubernetes_validate.__version__}, "
        f"Kubernetes {', '.join(KUBE_VERSIONS)}")
    out = {"kube_versions": KUBE_VERSIONS, "renders": {}}
    dashboard = check_dashboard()
    with helm.Chart.load(CHART) as chart:
        if chart.schema is None:
            problem("the chart has no values.schema.json")
        for name in ("default", "full"):
            values = load_values(name)
            lint(name, values)
            rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE)
            objs = manifests(rendered)
            check_manifests(name, objs, rendered)
            out["renders"][name] = {"values": chart.merge_values(values), "manifests": objs}
            log(f"{name}: {len(objs)} manifests rendered, linted and validated")
        expect_kinds("default", out["renders"]["default"]["manifests"],
                     {"ConfigMap": 1, "ServiceAccount": 1, "Deployment": 1, "Service": 1, "PodDisruptionBudget": 1})
        full = out["renders"]["full"]["manifests"]
        expect_kinds("full", full, {"ConfigMap": 2, "ServiceAccount": 1, "StatefulSet": 1, "Service": 3,
                                    "PodDisruptionBudget": 1, "Ingress": 1, "HorizontalPodAutoscaler": 1,
                                    "ServiceMonitor": 1})
        board = [o for o in full if o["kind"] == "ConfigMap" and o["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
        if len(board) != 1 or json.loads(board[0]["data"]["sluice.json"]) != dashboard:
            problem("full: no ConfigMap labelled grafana_dashboard=1 carrying dashboards/sluice.json")
        check_bad_values(chart)
        check_tls_schemes(chart)
        check_kafka_secrets(chart)
        check_toml_round_trip(chart)
        check_schema_covers_example(chart)
    if problems:
        for p in problems:
            log(f"FAIL {p}")
        log(f"{len(problems)} problem(s)")
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
