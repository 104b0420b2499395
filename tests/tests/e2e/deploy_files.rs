//! The deployment files validate against their schemas with the real validators: every
//! Kubernetes manifest in deploy/ (kubernetes-validate, strict: no unknown fields) and
//! docker-compose.yml (check-jsonschema's vendored compose specification). `scripts/test`
//! installs both into a virtualenv and names its folder in `GATEWAY_TEST_PYTOOLS`.

use std::path::PathBuf;
use std::process::Command;

use e2e::{pytool, repo};

fn run(tool: PathBuf, args: &[&str], files: &[PathBuf]) {
    let out = Command::new(&tool).args(args).args(files).output().expect("running the validator");
    assert!(
        out.status.success(),
        "{} rejected {files:?}:\n{}{}",
        tool.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_kubernetes_manifest_validates_and_is_in_the_kustomization() {
    let deploy = repo().join("deploy");
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(&deploy)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("kustomization.yaml"))
        .collect();
    manifests.sort();
    assert!(manifests.len() >= 5, "{manifests:?}");
    run(pytool("kubernetes-validate"), &["--strict", "--quiet"], &manifests);
    let kustomization = std::fs::read_to_string(deploy.join("kustomization.yaml")).unwrap();
    for manifest in &manifests {
        let name = manifest.file_name().unwrap().to_str().unwrap();
        assert!(kustomization.contains(&format!("- {name}")), "deploy/kustomization.yaml leaves out {name}");
    }
}

#[test]
fn the_compose_file_validates_and_mounts_files_that_exist() {
    let compose = repo().join("docker-compose.yml");
    run(pytool("check-jsonschema"), &["--builtin-schema", "vendor.compose-spec"], std::slice::from_ref(&compose));
    let text = std::fs::read_to_string(&compose).unwrap();
    for mount in text.lines().filter_map(|l| l.trim().strip_prefix("- ./")) {
        let file = mount.split(':').next().unwrap();
        assert!(repo().join(file).exists(), "docker-compose.yml mounts {file}, which is missing");
    }
}

/// Every metric the alert rules and the Grafana dashboard query is one the gateway or the worker
/// exports (a renamed metric would leave an alert that never fires).
#[test]
fn alerts_and_dashboard_query_only_metrics_that_exist() {
    let gateway = gateway::metrics::Metrics::default();
    // Label sets appear once used.
    gateway.socket("chat", 1);
    gateway.closed(1013);
    gateway.broker_call("publish", std::time::Duration::from_millis(1));
    let exported = format!("{}{}", gateway.render(), worker::metrics::WorkerMetrics::default().render());
    let deploy = repo().join("deploy");
    for file in ["prometheus/alerts.yml", "grafana/dashboard.json"] {
        let text = std::fs::read_to_string(deploy.join(file)).unwrap();
        let names: std::collections::BTreeSet<&str> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| ["gateway_", "worker_", "jobs_"].iter().any(|p| w.starts_with(p)))
            .collect();
        assert!(names.len() >= 5, "{file}: {names:?}");
        for name in names {
            assert!(exported.contains(name), "{file} queries {name}, which nothing exports");
        }
    }
}

/// The Prometheus operator's monitors (deploy/monitoring) have no schema in kubernetes-validate
/// (it warns and passes them), so what matters is checked here with the YAML parser of the
/// validators' virtualenv: each monitor selects objects the base defines, by a port those objects
/// name, and the overlay includes the base.
#[test]
fn the_monitors_select_the_gateway_service_and_the_worker_pods_by_named_ports() {
    let monitoring = repo().join("deploy/monitoring");
    let monitors = monitoring.join("monitors.yaml");
    run(pytool("kubernetes-validate"), &["--strict", "--quiet", "--no-warn"], std::slice::from_ref(&monitors));
    let overlay = std::fs::read_to_string(monitoring.join("kustomization.yaml")).unwrap();
    assert!(overlay.contains("- ..") && overlay.contains("- monitors.yaml"), "{overlay}");
    let check = r#"
import sys, yaml
base = [d for f in sys.argv[2:] for d in yaml.safe_load_all(open(f)) if d]
monitors = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
def labels_match(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())
kinds = {m["kind"] for m in monitors}
assert kinds == {"ServiceMonitor", "PodMonitor"}, kinds
for m in monitors:
    selector = m["spec"]["selector"]["matchLabels"]
    if m["kind"] == "ServiceMonitor":
        targets = [(d["metadata"].get("labels", {}), [p["name"] for p in d["spec"]["ports"]])
                   for d in base if d["kind"] == "Service"]
        ports = [e["port"] for e in m["spec"]["endpoints"]]
    else:
        targets = [(d["spec"]["template"]["metadata"]["labels"],
                    [p["name"] for c in d["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])])
                   for d in base if d["kind"] == "Deployment"]
        ports = [e["port"] for e in m["spec"]["podMetricsEndpoints"]]
    chosen = [names for labels, names in targets if labels_match(selector, labels)]
    assert chosen, f"{m['metadata']['name']} selects nothing with {selector}"
    for port in ports:
        assert all(port in names for names in chosen), f"{m['metadata']['name']}: no port named {port} in {chosen}"
print("monitors ok")
"#;
    let python = pytool("python");
    let deploy = repo().join("deploy");
    let out = Command::new(python)
        .arg("-c")
        .arg(check)
        .arg(&monitors)
        .arg(deploy.join("gateway.yaml"))
        .arg(deploy.join("worker.yaml"))
        .output()
        .expect("running the virtualenv's python");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
