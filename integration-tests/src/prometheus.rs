//! Debian's Prometheus (`prometheus`, `promtool`) for the metrics tests: a server on a free
//! 127.0.0.1 port scraping given targets and loading given rule files, stopped on drop; and
//! [`Scrape`], one `GET /metrics` of the daemon parsed into samples.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use crate::{free_port, run_ok, spawn_logged, wait_until};

/// A running Prometheus; dropping it stops it.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    port: u16,
}

impl Prometheus {
    /// Starts Prometheus with its config, data and log under `dir`, scraping `targets`
    /// (`host:port`, job `augur`) every second and loading `rule_files`.
    pub fn start(dir: &Path, targets: &[String], rule_files: &[PathBuf]) -> Prometheus {
        let port = free_port();
        std::fs::create_dir_all(dir.join("data")).expect("prometheus data dir");
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, config_yaml(targets, rule_files)).expect("write prometheus.yml");
        let child = spawn_logged(
            Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}")),
            &dir.join("prometheus.log"),
            "prometheus (run integration-tests/scripts/deps.sh)",
        );
        let p = Prometheus { child, port };
        wait_until("prometheus /-/ready", Duration::from_secs(60), || {
            curl(&format!("http://127.0.0.1:{port}/-/ready")).is_some()
        });
        p
    }

    /// The result vector of an instant query (`data.result`), empty if the query failed.
    pub fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let out = Command::new("curl")
            .args(["-sf", "-G", "--data-urlencode"])
            .arg(format!("query={promql}"))
            .arg(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .output()
            .expect("run curl");
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v["data"]["result"].as_array().cloned())
            .unwrap_or_default()
    }

    /// The rule groups Prometheus loaded (`/api/v1/rules`, `data.groups`).
    pub fn rule_groups(&self) -> Vec<serde_json::Value> {
        curl(&format!("http://127.0.0.1:{}/api/v1/rules", self.port))
            .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|v| v["data"]["groups"].as_array().cloned())
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_yaml(targets: &[String], rule_files: &[PathBuf]) -> String {
    let rules: String = rule_files
        .iter()
        .map(|f| format!("  - {}\n", f.display()))
        .collect();
    let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n{rules}\
         scrape_configs:\n  - job_name: augur\n    static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    )
}

/// The body of a successful GET, `None` on any failure.
pub fn curl(url: &str) -> Option<String> {
    let out = Command::new("curl").args(["-sf", url]).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `promtool check rules FILE`'s output; panics with it if the check fails.
pub fn promtool_check_rules(file: &Path) -> String {
    run_ok(Command::new("promtool").args(["check", "rules"]).arg(file))
}

/// One scrape of a metrics endpoint: sample (name with its labels as exposed) → value, and the
/// raw text for messages.
#[derive(Debug)]
pub struct Scrape {
    /// `name{labels}` (or `name`) → value.
    pub samples: BTreeMap<String, f64>,
    /// The exposition as served.
    pub text: String,
}

impl Scrape {
    /// `GET http://127.0.0.1:{port}/metrics`.
    pub fn get(port: u16) -> Scrape {
        let text = curl(&format!("http://127.0.0.1:{port}/metrics"))
            .unwrap_or_else(|| panic!("GET /metrics on 127.0.0.1:{port} failed"));
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect();
        Scrape { samples, text }
    }

    /// The sum of every sample of `name` whose labels contain each of `labels` (`k="v"`).
    pub fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.samples
            .iter()
            .filter(|(k, _)| {
                let (n, l) = k.split_once('{').unwrap_or((k, ""));
                n == name && labels.iter().all(|want| l.contains(want))
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// Whether any sample of `name` exists.
    pub fn has(&self, name: &str) -> bool {
        self.samples
            .keys()
            .any(|k| k.split_once('{').map_or(k.as_str(), |(n, _)| n) == name)
    }
}
