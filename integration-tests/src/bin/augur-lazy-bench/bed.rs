//! The test bed of the lazy-pull benchmark, set up once per run:
//!
//! 1. In this process's network namespace: a registry on a free port, the images from
//!    `images.sh push`, and their eStargz copies made with `ctr-remote image convert --estargz`
//!    (a throwaway containerd); both stopped again.
//! 2. A loopback-only namespace `augur-lazybench-<pid>` with a registry on 127.0.0.1:5000
//!    serving the same storage, one [`DelayProxy`] per profile (127.0.0.1:5001…5003 → 5000)
//!    and HTB limiting what each shaped proxy's port sends.
//! 3. A calibration of each profile: one ranged GET through its proxy with curl (time to first
//!    byte on a new connection, throughput), for the report.
//!
//! Clients of the registry (`ctr`, `ctr-remote`, the Augur daemon) run in the namespace;
//! containerd itself and the containers stay outside (containerd 1.6's client does the fetching).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use augur_integration_tests::delay_proxy::{self, DelayProxy};
use augur_integration_tests::lazy::push_estargz;
use augur_integration_tests::netns::{NetNs, PortRate, RateLimit};
use augur_integration_tests::{Containerd, Registry, RegistryOptions, TestDir, run_ok, workspace};

use crate::{Opts, PROFILES, WORKLOADS, progress};

/// The registry's port inside the namespace (the proxies forward to it).
const REGISTRY_PORT: u16 = 5000;
/// Bytes fetched by each calibration request.
const CALIBRATION_BYTES: u64 = 4 << 20;

/// An image as both modes pull it.
#[derive(Debug, Clone)]
pub struct ImageFacts {
    /// `python`, `python-big`.
    pub name: String,
    /// Layer bytes of the original (gzip) image: what a full pull downloads.
    pub plain_bytes: u64,
    /// Layer bytes of the eStargz copy.
    pub esgz_bytes: u64,
    /// Digest of the largest layer (for calibration reads).
    largest_layer: String,
}

/// What a profile measured at start-up.
#[derive(Debug, Clone)]
pub struct Calibration {
    /// Time to the first byte of a range request on a new connection.
    pub first_byte_secs: f64,
    /// Download rate of [`CALIBRATION_BYTES`] after the first byte, MB/s.
    pub mb_per_sec: f64,
}

/// Everything a run needs; fields drop in order (proxies, limits, registry, namespace, then
/// the scratch directory, unmounting whatever is left below it).
#[derive(Debug)]
pub struct Bed {
    proxies: Vec<DelayProxy>,
    rate_limit: RateLimit,
    _registry: Registry,
    netns: NetNs,
    /// Per workload (index of [`WORKLOADS`]).
    pub images: Vec<Option<ImageFacts>>,
    /// Per profile (index of [`PROFILES`]).
    pub calibration: Vec<Option<Calibration>>,
    dir: TestDir,
}

impl Bed {
    /// Prepares the images and starts the namespace, registry, limits and proxies.
    pub fn start(opts: &Opts) -> Result<Bed> {
        let dir = TestDir::new("lazybench");
        progress(format!("scratch dir {}", dir.path().display()));
        let data = dir.join("registry/data");
        let images = prepare_images(&dir, opts)?;
        let netns = NetNs::create("augur-lazybench");
        progress(format!(
            "network namespace {} (loopback only); registry on 127.0.0.1:{REGISTRY_PORT} inside",
            netns.name()
        ));
        let registry = Registry::start_with(
            &dir.join("registry-netns"),
            &RegistryOptions {
                port: Some(REGISTRY_PORT),
                data: Some(data),
                netns: Some(netns.path()),
                ..RegistryOptions::default()
            },
        );
        let limits: Vec<PortRate> = PROFILES
            .iter()
            .filter_map(|p| p.mbit.map(|mbit| PortRate { port: p.port, mbit }))
            .collect();
        let rate_limit = RateLimit::install(&netns, &limits);
        let mut proxies = Vec::new();
        for p in &PROFILES {
            let cfg = delay_proxy::in_netns(&netns.path(), p.port, REGISTRY_PORT, p.one_way);
            proxies
                .push(DelayProxy::start(cfg).with_context(|| format!("delay proxy {}", p.name))?);
        }
        let mut bed = Bed {
            proxies,
            rate_limit,
            _registry: registry,
            netns,
            images,
            calibration: vec![None; PROFILES.len()],
            dir,
        };
        for &p in &opts.profiles {
            bed.calibration[p] = Some(bed.calibrate(p)?);
        }
        Ok(bed)
    }

    /// The namespace clients run in.
    pub fn netns(&self) -> &NetNs {
        &self.netns
    }

    /// Profile `p`'s proxy.
    pub fn proxy(&self, p: usize) -> &DelayProxy {
        &self.proxies[p]
    }

    /// The scratch directory.
    pub fn dir(&self) -> &TestDir {
        &self.dir
    }

    /// `tc -s class show` of the namespace (how much each class sent and held back).
    pub fn tc_stats(&self) -> String {
        self.rate_limit.stats()
    }

    /// One range request for [`CALIBRATION_BYTES`] of the largest layer through profile `p`'s
    /// proxy, on a new connection.
    fn calibrate(&self, p: usize) -> Result<Calibration> {
        let facts = self
            .images
            .iter()
            .flatten()
            .next()
            .context("no image prepared")?;
        let url = format!(
            "http://{}/v2/{}/blobs/{}",
            self.proxies[p].host(),
            facts.name,
            facts.largest_layer
        );
        let out = run_ok(self.netns.command("curl").args([
            "-sf",
            "-o",
            "/dev/null",
            "-r",
            &format!("0-{}", CALIBRATION_BYTES - 1),
            "-w",
            "%{time_starttransfer} %{time_total} %{size_download}",
            &url,
        ]));
        let f: Vec<f64> = out
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        ensure!(f.len() == 3, "curl printed {out:?}");
        let cal = Calibration {
            first_byte_secs: f[0],
            mb_per_sec: f[2] / 1e6 / (f[1] - f[0]).max(1e-6),
        };
        progress(format!(
            "profile {}: first byte on a new connection after {:.0} ms, {:.1} MB/s",
            PROFILES[p].name,
            cal.first_byte_secs * 1e3,
            cal.mb_per_sec
        ));
        Ok(cal)
    }
}

/// Pushes the selected images and their eStargz copies into `dir/registry/data`, using a
/// registry and a containerd in this process's namespace that are stopped again at the end.
fn prepare_images(dir: &TestDir, opts: &Opts) -> Result<Vec<Option<ImageFacts>>> {
    let names: Vec<&str> = opts.workloads.iter().map(|&w| WORKLOADS[w].image).collect();
    progress(format!(
        "pushing {} (images.sh builds what is missing)",
        names.join(", ")
    ));
    let registry = Registry::start(&dir.join("registry"));
    registry.push_images(&names);
    let containerd = Containerd::start(&dir.join("convert-containerd"), &[]);
    let mut facts = vec![None; WORKLOADS.len()];
    for &w in &opts.workloads {
        let name = WORKLOADS[w].image;
        progress(format!("converting {name} to eStargz with ctr-remote"));
        push_estargz(&containerd, &registry, &format!("{name}:latest"));
        let plain = layers(&registry.host(), name, "latest")?;
        let esgz = layers(&registry.host(), name, "esgz")?;
        let largest = plain
            .iter()
            .max_by_key(|(_, size)| *size)
            .map(|(d, _)| d.clone())
            .context("image without layers")?;
        facts[w] = Some(ImageFacts {
            name: name.to_owned(),
            plain_bytes: plain.iter().map(|(_, s)| s).sum(),
            esgz_bytes: esgz.iter().map(|(_, s)| s).sum(),
            largest_layer: largest,
        });
    }
    drop(containerd);
    let _ = std::fs::remove_dir_all(dir.join("convert-containerd"));
    Ok(facts)
}

/// `(digest, size)` of each layer of `host/name:tag` (the first manifest of an index).
fn layers(host: &str, name: &str, tag: &str) -> Result<Vec<(String, u64)>> {
    let mut doc = manifest(host, name, tag)?;
    if let Some(first) = doc["manifests"][0]["digest"].as_str() {
        doc = manifest(host, name, first)?;
    }
    let layers = doc["layers"]
        .as_array()
        .with_context(|| format!("{name}:{tag}: no layers in {doc}"))?;
    Ok(layers
        .iter()
        .filter_map(|l| Some((l["digest"].as_str()?.to_owned(), l["size"].as_u64()?)))
        .collect())
}

fn manifest(host: &str, name: &str, reference: &str) -> Result<serde_json::Value> {
    let accept = "Accept: application/vnd.oci.image.manifest.v1+json, \
                  application/vnd.oci.image.index.v1+json, \
                  application/vnd.docker.distribution.manifest.v2+json, \
                  application/vnd.docker.distribution.manifest.list.v2+json";
    let body = run_ok(Command::new("curl").args([
        "-sf",
        "-H",
        accept,
        &format!("http://{host}/v2/{name}/manifests/{reference}"),
    ]));
    serde_json::from_str(&body).with_context(|| format!("manifest of {name}:{reference}"))
}

/// The release daemon measured: `$AUGUR_SNAPSHOTTER_BIN`, else `target/release/augur-snapshotter`.
pub fn augur_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("AUGUR_SNAPSHOTTER_BIN") {
        return p.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace().join("target"), PathBuf::from);
    target.join("release/augur-snapshotter")
}
