//! The test bed of the lazy-pull benchmark, set up once per run:
//!
//! 1. In this process's network namespace: a registry on a free port, the images from
//!    `images.sh push`, and their eStargz copies made with `ctr-remote image convert --estargz`
//!    (a throwaway containerd); both stopped again.
//! 2. A [`ShapedNet`] (shared with `augur-predict-bench`): a loopback-only namespace
//!    `augur-lazybench-<pid>` with a registry on 127.0.0.1:5000 serving the same storage, one
//!    delay proxy per profile (127.0.0.1:5001…5003 → 5000) and HTB limiting what each shaped
//!    proxy's port sends.
//! 3. A calibration of each profile: one ranged GET through its proxy with curl (time to first
//!    byte on a new connection, throughput), for the report.
//!
//! Clients of the registry (`ctr`, `ctr-remote`, the Augur daemon) run in the namespace;
//! containerd itself and the containers stay outside (containerd 1.6's client does the fetching).

use std::path::PathBuf;

use anyhow::{Context, Result};
use augur_integration_tests::delay_proxy::DelayProxy;
use augur_integration_tests::lazy::push_estargz;
use augur_integration_tests::netns::NetNs;
use augur_integration_tests::shaped::{Calibration, ShapedNet, layers};
use augur_integration_tests::{Containerd, Registry, TestDir, workspace};

use crate::{Opts, WORKLOADS, progress};

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

/// Everything a run needs; fields drop in order (the shaped network, then the scratch
/// directory, unmounting whatever is left below it).
#[derive(Debug)]
pub struct Bed {
    net: ShapedNet,
    /// Per workload (index of [`WORKLOADS`]).
    pub images: Vec<Option<ImageFacts>>,
    dir: TestDir,
}

impl Bed {
    /// Prepares the images and starts the namespace, registry, limits and proxies.
    pub fn start(opts: &Opts) -> Result<Bed> {
        let dir = TestDir::new("lazybench");
        progress(format!("scratch dir {}", dir.path().display()));
        let images = prepare_images(&dir, opts)?;
        let facts = images
            .iter()
            .flatten()
            .next()
            .context("no image prepared")?;
        let net = ShapedNet::start(
            "lazybench",
            dir.path(),
            dir.join("registry/data"),
            &opts.profiles,
            (&facts.name, &facts.largest_layer),
            progress,
        )?;
        Ok(Bed { net, images, dir })
    }

    /// The namespace clients run in.
    pub fn netns(&self) -> &NetNs {
        self.net.netns()
    }

    /// Profile `p`'s proxy.
    pub fn proxy(&self, p: usize) -> &DelayProxy {
        self.net.proxy(p)
    }

    /// What profile `p` measured at start, if it was calibrated.
    pub fn calibration(&self, p: usize) -> Option<&Calibration> {
        self.net.calibration[p].as_ref()
    }

    /// The scratch directory.
    pub fn dir(&self) -> &TestDir {
        &self.dir
    }

    /// `tc -s class show` of the namespace (how much each class sent and held back).
    pub fn tc_stats(&self) -> String {
        self.net.tc_stats()
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

/// The release daemon measured: `$AUGUR_SNAPSHOTTER_BIN`, else `target/release/augur-snapshotter`.
pub fn augur_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("AUGUR_SNAPSHOTTER_BIN") {
        return p.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace().join("target"), PathBuf::from);
    target.join("release/augur-snapshotter")
}
