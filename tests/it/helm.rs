//! The Helm chart (helm/sluice) against the real binary. `python/helm_check.py` lints and
//! renders the chart with Helm's own Go SDK and validates the manifests (Kubernetes schemas,
//! dashboard, bad values); this file then plays kubelet: it lays out a root file system the
//! way the pod would see it (the image's files and `ENV` from the Dockerfile, the ConfigMap and
//! Secrets at their mount paths, the state volume), starts `sluice` with the container's
//! arguments and environment, and checks that what the manifests declare is what the binary
//! serves: ports, probes, the ServiceMonitor's scrape, the Ingress' backend, the shutdown
//! timings, and `sluice check-config`. Container paths are moved under a temporary folder and
//! listen addresses to free loopback ports, after the ports were checked against the manifests.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice::config::{AuthMode, Config, SinkKind};

use crate::support::auth::{fixture, now, Signer, HS_SECRET};
use crate::support::process::Proc;
use crate::support::{free_port, kafka, unique};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// helm_check.py's output, produced once for every test here.
fn chart() -> &'static Value {
    static CHART: OnceLock<Value> = OnceLock::new();
    CHART.get_or_init(|| {
        let python = std::env::var("SLUICE_TEST_PYTHON").expect(
            "run with scripts/test, which sets SLUICE_TEST_PYTHON (a virtualenv with helm-python-sdk and kubernetes-validate)",
        );
        let out = Command::new(python)
            .arg(Path::new(REPO).join("tests/it/python/helm_check.py"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "chart checks failed:\n{stderr}");
        eprint!("{stderr}");
        let stdout = String::from_utf8(out.stdout).unwrap();
        let last = stdout.lines().rfind(|l| !l.trim().is_empty()).unwrap();
        serde_json::from_str(last).expect("helm_check.py prints its result as JSON")
    })
}

#[tokio::test]
async fn helm_default_values_serve_what_the_chart_declares() {
    Pod::new("default").check().await;
}

#[tokio::test]
async fn helm_full_values_serve_what_the_chart_declares() {
    Pod::new("full").check().await;
}

/// What the image brings: the final stage of the Dockerfile.
struct Image {
    env: Vec<(String, String)>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    /// (source in the repository, destination in the image)
    copies: Vec<(String, String)>,
}

impl Image {
    fn from_dockerfile() -> Image {
        let text = std::fs::read_to_string(Path::new(REPO).join("Dockerfile")).unwrap();
        let joined = text.replace("\\\n", " ");
        let final_stage = joined.rsplit("\nFROM ").next().unwrap();
        let mut image = Image {
            env: Vec::new(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            copies: Vec::new(),
        };
        for line in final_stage.lines().map(str::trim) {
            let (op, rest) = line.split_once(' ').unwrap_or((line, ""));
            match op {
                "ENV" => {
                    for pair in rest.split_whitespace() {
                        let (k, v) = pair.split_once('=').expect("ENV k=v");
                        image.env.push((k.to_string(), v.to_string()));
                    }
                }
                "ENTRYPOINT" => image.entrypoint = serde_json::from_str(rest).unwrap(),
                "CMD" => image.cmd = serde_json::from_str(rest).unwrap(),
                "COPY" if !rest.starts_with("--from") => {
                    let parts: Vec<&str> = rest.split_whitespace().collect();
                    image
                        .copies
                        .push((parts[0].to_string(), parts[1].to_string()));
                }
                _ => {}
            }
        }
        image
    }
}

/// One rendered release, laid out on disk as its pod would see it.
struct Pod {
    name: &'static str,
    values: Value,
    objects: Vec<Value>,
    workload: Value,
    container: Value,
    /// The container's file system, under a temporary folder.
    root: tempfile::TempDir,
}

impl Pod {
    fn new(name: &'static str) -> Pod {
        let render = &chart()["renders"][name];
        let objects = render["manifests"].as_array().unwrap().clone();
        let workloads: Vec<&Value> = objects
            .iter()
            .filter(|o| o["kind"] == "Deployment" || o["kind"] == "StatefulSet")
            .collect();
        assert_eq!(workloads.len(), 1, "{name}: one workload");
        let workload = workloads[0].clone();
        let containers = workload["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(containers.len(), 1, "{name}: one container");
        Pod {
            name,
            values: render["values"].clone(),
            container: containers[0].clone(),
            objects,
            workload,
            root: tempfile::tempdir().unwrap(),
        }
    }

    fn pod_spec(&self) -> &Value {
        &self.workload["spec"]["template"]["spec"]
    }

    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    /// A container path on the host.
    fn host(&self, container_path: &str) -> PathBuf {
        assert!(container_path.starts_with('/'), "{container_path}");
        self.root
            .path()
            .join(container_path.trim_start_matches('/'))
    }

    fn mounts(&self) -> Vec<(String, String)> {
        self.container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap().to_string(),
                    m["mountPath"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    fn mount_path(&self, volume: &str) -> String {
        self.mounts()
            .into_iter()
            .find(|(n, _)| n == volume)
            .unwrap_or_else(|| panic!("{}: volume {volume} is not mounted", self.name))
            .1
    }

    /// The content of a key of a Secret the chart references, as the values describe it.
    fn secret_data(&self, secret: &str, key: &str, api_keys: &str) -> Vec<u8> {
        let s = &self.values["secrets"];
        if s["apiKeys"]["secretName"] == secret && s["apiKeys"]["key"] == key {
            return api_keys.as_bytes().to_vec();
        }
        let jwt = s["jwtKeys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["secretName"] == secret && k["key"] == key)
            .unwrap_or_else(|| {
                panic!(
                    "{}: the pod mounts {secret}/{key}, which no value names",
                    self.name
                )
            });
        match jwt["algorithm"].as_str().unwrap() {
            a if a.starts_with("HS") => HS_SECRET.as_bytes().to_vec(),
            a if a.starts_with("RS") || a.starts_with("PS") => fixture("rsa1.pub.pem"),
            "ES256" => fixture("ec256.pub.pem"),
            "ES384" => fixture("ec384.pub.pem"),
            "EdDSA" => fixture("ed25519.pub.pem"),
            a => panic!("no fixture key for {a}"),
        }
    }

    /// Places the image's files and every mounted volume; returns the ConfigMap's sluice.toml
    /// as mounted (container paths) and its host path.
    fn lay_out(&self, image: &Image, api_keys: &str) -> (String, PathBuf) {
        for (src, dest) in &image.copies {
            copy_dir(&Path::new(REPO).join(src), &self.host(dest));
        }
        let claims: Vec<&str> = self.workload["spec"]["volumeClaimTemplates"]
            .as_array()
            .map(|v| {
                v.iter()
                    .map(|c| c["metadata"]["name"].as_str().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        let volumes = self.pod_spec()["volumes"].as_array().unwrap();
        let mut config_file = None;
        let mut seen = HashSet::new();
        for (name, path) in self.mounts() {
            assert!(
                seen.insert(path.clone()),
                "{}: two mounts at {path}",
                self.name
            );
            let dir = self.host(&path);
            std::fs::create_dir_all(&dir).unwrap();
            if claims.contains(&name.as_str()) {
                continue;
            }
            let vol = volumes
                .iter()
                .find(|v| v["name"] == name.as_str())
                .unwrap_or_else(|| panic!("{}: mount {name} has no volume", self.name));
            if vol.get("emptyDir").is_some() {
                continue;
            }
            if let Some(cm) = vol.get("configMap") {
                let obj = self
                    .of_kind("ConfigMap")
                    .into_iter()
                    .find(|o| o["metadata"]["name"] == cm["name"])
                    .unwrap_or_else(|| {
                        panic!("{}: ConfigMap {} not rendered", self.name, cm["name"])
                    });
                for (key, text) in obj["data"].as_object().unwrap() {
                    let text = text.as_str().unwrap();
                    std::fs::write(dir.join(key), text).unwrap();
                    config_file = Some((text.to_string(), dir.join(key)));
                }
            } else if let Some(secret) = vol.get("secret") {
                let secret_name = secret["secretName"].as_str().unwrap();
                for item in secret["items"].as_array().unwrap() {
                    let data =
                        self.secret_data(secret_name, item["key"].as_str().unwrap(), api_keys);
                    std::fs::write(dir.join(item["path"].as_str().unwrap()), data).unwrap();
                }
            } else {
                panic!("{}: volume {name} of an unexpected type: {vol}", self.name);
            }
        }
        config_file.expect("a ConfigMap is mounted")
    }

    /// The container's environment: the image's ENV, then the pod's env (later wins).
    fn env(&self, image: &Image) -> Vec<(String, String)> {
        assert!(
            self.container.get("envFrom").is_none(),
            "{}: envFrom cannot be resolved here",
            self.name
        );
        let mut env: Vec<(String, String)> = image.env.clone();
        for e in self.container["env"].as_array().unwrap() {
            let value = e["value"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: env {e} has no plain value", self.name));
            env.retain(|(k, _)| k != e["name"].as_str().unwrap());
            env.push((e["name"].as_str().unwrap().to_string(), value.to_string()));
        }
        env
    }

    /// Named container ports.
    fn ports(&self) -> BTreeMap<String, u16> {
        self.container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["containerPort"].as_u64().unwrap() as u16,
                )
            })
            .collect()
    }

    /// The container port a Service port name leads to, through its targetPort.
    fn service_target(&self, service: &Value, port_name: &str) -> String {
        let port = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == port_name)
            .unwrap_or_else(|| panic!("{}: Service has no port {port_name}", self.name));
        let target = port["targetPort"].as_str().expect("targetPort by name");
        assert!(
            self.ports().contains_key(target),
            "{}: Service port {port_name} targets {target}, which the container does not declare",
            self.name
        );
        target.to_string()
    }

    fn pod_labels(&self) -> &serde_json::Map<String, Value> {
        self.workload["spec"]["template"]["metadata"]["labels"]
            .as_object()
            .unwrap()
    }

    fn selects_pods(&self, selector: &Value) -> bool {
        let labels = self.pod_labels();
        selector
            .as_object()
            .unwrap()
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    }

    async fn check(&self) {
        let r = self.start().await;
        let probe_port = self.check_probes(&r).await;
        self.check_selectors();
        let metrics_url = self.check_metrics(&r, &probe_port).await;
        self.check_ingest_route();
        self.send_events(&r).await;
        let drained_in = self.check_sigterm(r).await;
        eprintln!(
            "helm {}: probes on {probe_port}, metrics at {metrics_url}, exited {drained_in:?} after SIGTERM",
            self.name
        );
    }

    /// Lays out the pod, checks the config it gets against its manifests, runs
    /// `sluice check-config` and starts `sluice` as the container would.
    async fn start(&self) -> Running {
        let image = Image::from_dockerfile();
        let bin = env!("CARGO_BIN_EXE_sluice");
        assert!(
            image.entrypoint[0].ends_with("/sluice"),
            "{:?}",
            image.entrypoint
        );
        assert!(
            self.container.get("command").is_none(),
            "the image's ENTRYPOINT runs"
        );
        let args: Vec<String> = match self.container.get("args") {
            Some(a) => serde_json::from_value(a.clone()).unwrap(),
            None => image.cmd.clone(),
        };
        assert_eq!(args, ["serve"]);

        // A real API key from the binary, for the API-key Secret.
        let tenant = unique("helm");
        let generated = Command::new(bin)
            .args(["keys", "generate", "--tenant", &tenant])
            .args(["--scope", "events:write:*", "--for-file"])
            .output()
            .unwrap();
        assert!(generated.status.success());
        let generated = String::from_utf8(generated.stdout).unwrap();
        let api_key = generated.lines().next().unwrap().to_string();
        let entry = &generated[generated.find("[[api_keys]]").unwrap()..];

        let (mounted_toml, config_path) = self.lay_out(&image, entry);
        let env = self.env(&image);
        let workdir = self.host(self.container["workingDir"].as_str().unwrap());
        let state_dir = self.host(&self.mount_path("state"));
        assert_eq!(
            workdir, state_dir,
            "relative paths in the config must land on the state volume"
        );

        // The file is the truth: no variable overrides a field the file sets with another
        // value, and none sets what the chart derives from the file.
        let file: toml::Table = toml::from_str(&mounted_toml).expect("sluice.toml is TOML");
        for (k, v) in &env {
            let Some(rest) = k.strip_prefix("SLUICE_") else {
                continue;
            };
            let Some((section, field)) = rest.split_once("__") else {
                continue;
            };
            let (section, field) = (section.to_lowercase(), field.to_lowercase());
            assert_ne!(section, "server", "{}: {k} overrides the file", self.name);
            if let Some(in_file) = file.get(&section).and_then(|s| s.get(&field)) {
                let in_file = match in_file {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                assert_eq!(&in_file, v, "{}: {k} disagrees with sluice.toml", self.name);
            }
        }

        // Container paths in the config and the environment, moved under the temporary root.
        let mount_points: Vec<String> = self
            .mounts()
            .into_iter()
            .map(|(_, p)| p)
            .chain(image.copies.iter().map(|(_, d)| d.clone()))
            .collect();
        let remap = |s: &str| -> String {
            let (scheme, path) = s.split_once("://").unwrap_or(("", s));
            if mount_points
                .iter()
                .any(|m| path == m || path.starts_with(&format!("{m}/")))
            {
                let host = self.host(path).display().to_string();
                if scheme.is_empty() {
                    host
                } else {
                    format!("{scheme}://{host}")
                }
            } else {
                s.to_string()
            }
        };
        let mut config = file.clone();
        remap_strings(&mut config, &remap);
        std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.clone(), remap(v))).collect();

        // What the binary reads (file + environment), before addresses move.
        let effective = Config::load(Some(&config_path), env.clone())
            .unwrap_or_else(|e| panic!("{}: the rendered config does not load: {e}", self.name));
        let ports = self.ports();
        let mut want = BTreeMap::from([("http".to_string(), effective.server.listen.port())]);
        if let Some(admin) = effective.server.admin_listen {
            want.insert("admin".to_string(), admin.port());
        }
        assert_eq!(
            ports, want,
            "{}: container ports vs server.listen/admin_listen",
            self.name
        );
        self.check_timings(&effective);
        // Writable paths are on the state volume (the root file system is read-only).
        let mut writable = Vec::new();
        if effective.sink.kind == SinkKind::File {
            writable.push(("file.dir", effective.file.dir.clone()));
        }
        if effective.spool.enabled {
            writable.push(("spool.dir", effective.spool.dir.clone()));
        }
        if let Some(db) = effective.registry.url.strip_prefix("sqlite://") {
            writable.push(("registry.url", PathBuf::from(db)));
        }
        for (what, dir) in writable {
            let dir = workdir.join(dir);
            assert!(
                dir.starts_with(&state_dir),
                "{}: {what} {} is not on the state volume",
                self.name,
                dir.display()
            );
        }

        // Addresses: free loopback ports for the container's named ports; the test broker.
        let mut host_ports = BTreeMap::new();
        let server = config.get_mut("server").unwrap().as_table_mut().unwrap();
        for (name, field) in [("http", "listen"), ("admin", "admin_listen")] {
            if ports.contains_key(name) {
                let port = free_port();
                host_ports.insert(name.to_string(), port);
                server.insert(field.into(), format!("127.0.0.1:{port}").into());
            }
        }
        if effective.sink.kind == SinkKind::Kafka {
            let section = config.get_mut("kafka").unwrap().as_table_mut().unwrap();
            section.insert("brokers".into(), kafka::brokers().into());
        }
        std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();

        // `sluice check-config`, as `kubectl exec` would run it in the pod.
        let out = Command::new(bin)
            .arg("check-config")
            .env_clear()
            .envs(env.iter().cloned())
            .current_dir(&workdir)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: check-config refuses the rendered config: {}{}",
            self.name,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("config OK") && !stdout.contains(" 0 schemas"),
            "{}: {stdout}",
            self.name
        );

        let log = self.root.path().join("sluice.log");
        let child = Command::new(bin)
            .args(&args)
            .env_clear()
            .envs(env.iter().cloned())
            .current_dir(&workdir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Running {
            proc: Proc {
                child,
                url: format!("http://127.0.0.1:{}", host_ports["http"]),
            },
            client: reqwest::Client::new(),
            config: effective,
            host_ports,
            log,
            state_dir,
            tenant,
            api_key,
        }
    }

    /// Every probe answers 200 on the port it names, as the kubelet would see it. Returns
    /// that port's name.
    async fn check_probes(&self, r: &Running) -> String {
        let mut probe_port = None;
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            let get = &self.container[probe]["httpGet"];
            assert!(get.is_object(), "{}: no {probe}", self.name);
            // Neither values file turns TLS on: the kubelet would speak plain HTTP.
            assert_eq!(get["scheme"], "HTTP", "{}: {probe}", self.name);
            let port = get["port"].as_str().expect("probes name their port");
            let url = r.url(self, port, get["path"].as_str().unwrap());
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let status = r
                    .client
                    .get(&url)
                    .send()
                    .await
                    .ok()
                    .map(|resp| resp.status().as_u16());
                if status == Some(200) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{}: {probe} {url} answers {status:?}\n{}",
                    self.name,
                    r.logs()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            assert!(probe_port.is_none_or(|p| p == port), "probes on one port");
            probe_port = Some(port.to_string());
        }
        probe_port.unwrap()
    }

    /// Services, the PodDisruptionBudget and the HPA point at these pods and their ports.
    fn check_selectors(&self) {
        for s in self.of_kind("Service") {
            assert!(
                self.selects_pods(&s["spec"]["selector"]),
                "{}: {s}",
                self.name
            );
            for p in s["spec"]["ports"].as_array().unwrap() {
                self.service_target(s, p["name"].as_str().unwrap());
            }
        }
        for pdb in self.of_kind("PodDisruptionBudget") {
            assert!(self.selects_pods(&pdb["spec"]["selector"]["matchLabels"]));
        }
        for hpa in self.of_kind("HorizontalPodAutoscaler") {
            let target = &hpa["spec"]["scaleTargetRef"];
            assert_eq!(target["kind"], self.workload["kind"]);
            assert_eq!(target["name"], self.workload["metadata"]["name"]);
        }
    }

    /// /metrics is where the ServiceMonitor scrapes (through the one Service it selects), or
    /// without one where the probes are, and exports what the HPA scales on. The demand gauge
    /// is set by a once-a-second refresh, so this scrapes until it shows up, as Prometheus
    /// would. Returns the URL scraped.
    async fn check_metrics(&self, r: &Running, probe_port: &str) -> String {
        let url = match self.of_kind("ServiceMonitor").first() {
            Some(sm) => {
                let selector = sm["spec"]["selector"]["matchLabels"].as_object().unwrap();
                let selected: Vec<&Value> = self
                    .of_kind("Service")
                    .into_iter()
                    .filter(|s| {
                        selector
                            .iter()
                            .all(|(k, v)| s["metadata"]["labels"].get(k) == Some(v))
                    })
                    .collect();
                assert_eq!(
                    selected.len(),
                    1,
                    "{}: the ServiceMonitor selects one Service",
                    self.name
                );
                let ep = &sm["spec"]["endpoints"][0];
                let target = self.service_target(selected[0], ep["port"].as_str().unwrap());
                r.url(self, &target, ep["path"].as_str().unwrap())
            }
            None => r.url(self, probe_port, "/metrics"),
        };
        let mut wanted = vec!["sluice_ready".to_string()];
        for hpa in self.of_kind("HorizontalPodAutoscaler") {
            for m in hpa["spec"]["metrics"].as_array().unwrap() {
                if m["type"] == "Pods" {
                    wanted.push(m["pods"]["metric"]["name"].as_str().unwrap().to_string());
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let resp = r.client.get(&url).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{}: {url}", self.name);
            let metrics = resp.text().await.unwrap();
            let missing: Vec<&String> = wanted
                .iter()
                .filter(|m| !metrics.contains(&format!("# TYPE {m} gauge")))
                .collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {url} does not export {missing:?}, which the HPA or the test need",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if r.config.server.admin_listen.is_some() {
            let on_ingest = r.client.get(r.url(self, "http", "/metrics")).send();
            assert_eq!(
                on_ingest.await.unwrap().status(),
                404,
                "admin routes left the ingest port"
            );
        }
        url
    }

    /// The ingest Service and every Ingress backend lead to the ingest port, never admin.
    fn check_ingest_route(&self) {
        let services = self.of_kind("Service");
        let ingest = services
            .iter()
            .find(|s| s["metadata"]["labels"]["sluice/service"] == "ingest")
            .unwrap();
        let mut targets = vec![self.service_target(ingest, "http")];
        for ing in self.of_kind("Ingress") {
            for rule in ing["spec"]["rules"].as_array().unwrap() {
                for path in rule["http"]["paths"].as_array().unwrap() {
                    let backend = &path["backend"]["service"];
                    let svc = services
                        .iter()
                        .find(|s| s["metadata"]["name"] == backend["name"])
                        .expect("the Ingress routes to a rendered Service");
                    let port = backend["port"]["name"].as_str().unwrap();
                    targets.push(self.service_target(svc, port));
                }
            }
        }
        assert!(
            targets.iter().all(|t| t == "http"),
            "{}: the ingest Service and the Ingress lead to {targets:?}; only the ingest port (http) may be routed",
            self.name
        );
    }

    /// SIGTERM: the probe port reports 503 at once while the ingest port still serves, then
    /// Sluice exits within shutdown_grace, before the kubelet's kill. Returns how long it took.
    async fn check_sigterm(&self, mut r: Running) -> Duration {
        let readyz = r.readyz(self);
        let signalled = Instant::now();
        r.proc.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(1);
        while r.client.get(&readyz).send().await.unwrap().status() != 503 {
            assert!(
                Instant::now() < deadline,
                "{}: readiness still 200 after SIGTERM",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !r.config.server.drain_delay.0.is_zero() {
            let still = r.client.get(r.url(self, "http", "/openapi.yaml")).send();
            assert_eq!(
                still.await.unwrap().status(),
                200,
                "still serving during server.drain_delay"
            );
        }
        let grace = r.config.server.shutdown_grace.0;
        let status = r.proc.wait_exit(grace + Duration::from_secs(1));
        assert!(
            status.success(),
            "{}: exit {status:?}\n{}",
            self.name,
            r.logs()
        );
        signalled.elapsed()
    }

    /// preStop, drain_delay, shutdown_grace and terminationGracePeriodSeconds line up as
    /// values.yaml (`termination`) says.
    fn check_timings(&self, c: &Config) {
        let ceil_secs = |d: Duration| d.as_millis().div_ceil(1000) as u64;
        let pre_stop = self.container["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .unwrap_or(0);
        let window = Duration::from_secs(
            self.values["termination"]["deregistrationSeconds"]
                .as_u64()
                .unwrap(),
        );
        let drain = c.server.drain_delay.0;
        let grace = c.server.shutdown_grace.0;
        assert_eq!(
            pre_stop,
            ceil_secs(window.saturating_sub(drain)),
            "{}: preStop sleeps what drain_delay does not cover of the deregistration window",
            self.name
        );
        assert!(
            Duration::from_secs(pre_stop) + drain >= window,
            "{}: new requests are accepted for preStop + drain_delay",
            self.name
        );
        let tgps = self.pod_spec()["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap();
        assert!(
            tgps > pre_stop + ceil_secs(grace),
            "{}: terminationGracePeriodSeconds {tgps} must exceed preStop {pre_stop}s + shutdown_grace {grace:?}",
            self.name
        );
    }

    /// Events go in through the ingest port, authenticated with what the pod's Secrets hold,
    /// and end up where the config says: in the file sink or, through the spool, the broker.
    async fn send_events(&self, r: &Running) {
        let (c, client) = (&r.config, &r.client);
        let event = json!({"type": "app.signup", "source": "/helm", "data": {"user_id": "u1", "plan": "team"}});
        let post = || {
            client
                .post(format!("{}/v1/events", r.proc.url))
                .header("content-type", "application/cloudevents+json")
                .body(event.to_string())
        };
        let mut requests = Vec::new();
        if c.auth.effective_mode() == AuthMode::Disabled {
            requests.push(post());
        } else {
            // Through the API-key file and the PEM key the pod gets from its Secrets.
            requests.push(post().header("x-api-key", &r.api_key));
            let rsa = self.values["secrets"]["jwtKeys"]
                .as_array()
                .unwrap()
                .iter()
                .find(|k| k["algorithm"] == "RS256")
                .expect("an RS256 key in the values");
            let mut claims = json!({
                "sub": "helm-test", "scope": "events:write:*", "iat": now(), "exp": now() + 600,
            });
            claims[c.auth.tenant_claim.as_str()] = json!(r.tenant);
            if let Some(iss) = c.auth.issuer.first() {
                claims["iss"] = json!(iss);
            }
            if let Some(aud) = c.auth.audience.first() {
                claims["aud"] = json!(aud);
            }
            let token =
                Signer::new(jsonwebtoken::Algorithm::RS256, rsa["kid"].as_str()).sign(&claims);
            requests.push(post().bearer_auth(token));
        }
        if c.sink.kind == SinkKind::Kafka {
            let topic = c
                .routes
                .default_topic
                .replace("{tenant}", &r.tenant)
                .replace("{type}", "app.signup");
            kafka::create_topic(&kafka::brokers(), &topic, 1).await;
        }
        let mut ids = Vec::new();
        for r in requests {
            let resp = r.send().await.unwrap();
            let status = resp.status();
            let body: Value = resp.json().await.unwrap();
            assert_eq!(status, 200, "{}: {body}", self.name);
            ids.push(body["results"][0]["id"].as_str().unwrap().to_string());
        }
        match c.sink.kind {
            // The embedded default writes under the state volume.
            SinkKind::File => {
                let written = read_all(&r.state_dir.join(&c.file.dir));
                for id in &ids {
                    assert!(
                        written.contains(id.as_str()),
                        "{}: {id} not in the file sink",
                        self.name
                    );
                }
            }
            // Spooled on the state volume, then replayed to the broker.
            _ if c.spool.enabled => {
                assert!(r.state_dir.join(&c.spool.dir).join("lock").exists());
                let readyz = r.readyz(self);
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let ready: Value = client
                        .get(&readyz)
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    if ready["checks"]["spool"]["backlog_bytes"] == 0 {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{}: spool not replayed: {ready}",
                        self.name
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            _ => {}
        }
    }
}

/// `sluice` started as the pod's container, on loopback ports standing for its named ports.
struct Running {
    proc: Proc,
    client: reqwest::Client,
    /// What the binary read: the file and the environment.
    config: Config,
    /// Container port name -> the loopback port standing for it.
    host_ports: BTreeMap<String, u16>,
    log: PathBuf,
    state_dir: PathBuf,
    /// The tenant and key of the API key in the pod's Secret.
    tenant: String,
    api_key: String,
}

impl Running {
    fn url(&self, pod: &Pod, port_name: &str, path: &str) -> String {
        let port = self
            .host_ports
            .get(port_name)
            .unwrap_or_else(|| panic!("{}: no container port named {port_name}", pod.name));
        format!("http://127.0.0.1:{port}{path}")
    }

    /// Where the kubelet asks for readiness.
    fn readyz(&self, pod: &Pod) -> String {
        let get = &pod.container["readinessProbe"]["httpGet"];
        self.url(
            pod,
            get["port"].as_str().unwrap(),
            get["path"].as_str().unwrap(),
        )
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn remap_strings(t: &mut toml::Table, f: &impl Fn(&str) -> String) {
    for (_, v) in t.iter_mut() {
        remap_value(v, f);
    }
}

fn remap_value(v: &mut toml::Value, f: &impl Fn(&str) -> String) {
    match v {
        toml::Value::String(s) => *s = f(s),
        toml::Value::Array(a) => a.iter_mut().for_each(|v| remap_value(v, f)),
        toml::Value::Table(t) => remap_strings(t, f),
        _ => {}
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// Every file under `dir`, concatenated.
fn read_all(dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.push_str(&read_all(&path));
        } else {
            out.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
    }
    out
}
