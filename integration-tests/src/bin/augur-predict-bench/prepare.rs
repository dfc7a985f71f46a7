//! Everything the runs share, made once:
//!
//! 1. The held-out split of the recorded traces (`onnx-models/traces/tools-v1.jsonl`):
//!    `augurctl predictor eval --split args --seed S --write-split`, so the benchmark tests
//!    exactly the argument sets the simulated evaluation holds out. The test argument sets are
//!    matched to their commands in `onnx-models/workloads.json`.
//! 2. The LSTM trained on the training runs only (`onnx-models/train.py`, as `eval-heldout.sh`
//!    does), with its cross-fitting folds (`--folds`, so `train-state` calibrates it out of
//!    sample), cached under `$AUGUR_CACHE/predict-bench/lstm-<sha256 of train.jsonl>-folds<K>`.
//! 3. The `tools` image (`images.sh`) and its eStargz copy made with `augurctl image convert`
//!    (as the recorder made it, so chunk digests match the traces), served through a
//!    [`ShapedNet`].
//! 4. Per profile, each variant's state (`augurctl predictor train-state` with the variant's
//!    models, re-keyed to the profile's image reference, since each profile's proxy has its own
//!    address), and for the oracle one state per test argument set from that set's own runs.
//!
//! With `--unseen-image` the same argument sets are measured, but the models (and the LSTM)
//! learn the recorded runs of another image instead (`python-big-v1.jsonl`, keyed to a
//! `python-big` reference behind the same proxy): the image they are then run on is one they
//! never saw, though it shares base layers with the one they did. The oracle is unchanged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use augur_integration_tests::shaped::{PROFILES, ShapedNet, layers};
use augur_integration_tests::{Registry, TestDir, augurctl_bin, cache_dir, run_ok, workspace};
use augur_predictor::Trace;
use augur_predictor::trace::jsonl;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::opts::{Opts, Variant};
use crate::progress;

/// The label the recorder put on each run: `<group>/<name>` of `workloads.json`.
pub const ARGS_LABEL: &str = "containerd.io/snapshot/augur.args";
/// The image the traces were recorded in.
const IMAGE: &str = "tools";
/// The image whose recorded runs train the models with `--unseen-image`.
const OTHER_IMAGE: &str = "python-big";

/// One held-out argument set.
#[derive(Debug)]
pub struct ArgSet {
    /// `<group>/<name>`.
    pub label: String,
    /// The program (`python3`, `gcc`, …).
    pub group: String,
    /// The container's command.
    pub argv: Vec<String>,
    /// Its recorded test runs, as a trace file (the oracle's training data).
    runs: PathBuf,
}

/// What the runs share; fields drop in order (the shaped network, then the scratch directory).
#[derive(Debug)]
pub struct Prepared {
    /// The namespace, registry, limits and proxies.
    pub net: ShapedNet,
    /// The test argument sets measured.
    pub sets: Vec<ArgSet>,
    /// Runs in the training and test halves of the split.
    pub split_runs: (usize, usize),
    /// Whether the models were trained on another image's runs (`--unseen-image`).
    pub unseen_image: bool,
    /// The LSTM model trained on the training runs, if a variant needs it.
    pub lstm: Option<PathBuf>,
    /// Scratch directory.
    pub dir: TestDir,
}

#[derive(Debug, Deserialize)]
struct WorkloadFile {
    image: String,
    workloads: Vec<WorkloadEntry>,
}

#[derive(Debug, Deserialize)]
struct WorkloadEntry {
    group: String,
    name: String,
    argv: Vec<String>,
}

impl Prepared {
    /// Splits, trains, converts, starts the network and writes every state and config.
    pub fn start(opts: &Opts) -> Result<Prepared> {
        let dir = TestDir::new("predictbench");
        progress(format!("scratch dir {}", dir.path().display()));
        let (mut train, test) = split(&dir.join("split"), opts.seed)?;
        if opts.unseen_image {
            let other = workspace().join(format!("onnx-models/traces/{OTHER_IMAGE}-v1.jsonl"));
            let runs = jsonl::read_file(&other)?.len();
            ensure!(runs > 0, "{} holds no runs", other.display());
            train = (other, runs);
        }
        let mut sets = arg_sets(&test, &dir.join("split/sets"))?;
        let split_runs = (train.1, test.len());
        if let Some(n) = opts.workloads {
            sets.truncate(n);
        }
        progress(format!(
            "split (seed {}): {} training runs, {} test runs; measuring {} argument sets: {}",
            opts.seed,
            split_runs.0,
            split_runs.1,
            sets.len(),
            sets.iter()
                .map(|s| s.label.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let lstm = if opts.variants.iter().any(|v| v.needs_lstm()) {
            Some(trained_lstm(&train.0)?)
        } else {
            None
        };
        let largest = prepare_image(&dir)?;
        let net = ShapedNet::start(
            "predictbench",
            dir.path(),
            dir.join("registry/data"),
            &opts.profiles,
            (IMAGE, &largest),
            progress,
        )?;
        let prep = Prepared {
            net,
            sets,
            split_runs,
            unseen_image: opts.unseen_image,
            lstm,
            dir,
        };
        prep.write_states(opts, &train.0)?;
        Ok(prep)
    }

    /// The image reference runs pull through profile `p`.
    pub fn image(&self, p: usize) -> String {
        format!("{}/{IMAGE}:esgz", self.net.proxy(p).host())
    }

    /// The state directory a run of `v` on profile `p` and argument set `w` starts from.
    pub fn state_dir(&self, v: Variant, p: usize, w: usize) -> PathBuf {
        let name = match v {
            Variant::Oracle => format!("oracle-{w}-{}", PROFILES[p].name),
            _ => format!("{}-{}", v.name(), PROFILES[p].name),
        };
        self.dir.join("state").join(name)
    }

    /// The daemon config of `v`.
    pub fn config(&self, v: Variant) -> PathBuf {
        self.dir.join("config").join(format!("{}.toml", v.name()))
    }

    fn write_states(&self, opts: &Opts, train: &Path) -> Result<()> {
        let ort = ort_library();
        let lstm = self.lstm.clone().map(|m| (m, ort.clone()));
        std::fs::create_dir_all(self.dir.join("config"))?;
        for &v in &opts.variants {
            std::fs::write(self.config(v), v.config(lstm.as_ref(), opts.threshold))?;
            let Some(models) = v.models() else { continue };
            for &p in &opts.profiles {
                if v == Variant::Oracle {
                    for (w, set) in self.sets.iter().enumerate() {
                        let image = self.image(p);
                        self.train_state(models, &set.runs, &image, &self.state_dir(v, p, w))?;
                    }
                } else {
                    let image = if self.unseen_image {
                        format!("{}/{OTHER_IMAGE}:esgz", self.net.proxy(p).host())
                    } else {
                        self.image(p)
                    };
                    self.train_state(models, train, &image, &self.state_dir(v, p, 0))?;
                }
            }
        }
        Ok(())
    }

    fn train_state(&self, models: &[&str], traces: &Path, image: &str, out: &Path) -> Result<()> {
        let mut cmd = Command::new(augurctl_bin());
        cmd.args(["predictor", "train-state", "--models", &models.join(",")])
            .arg("--traces")
            .arg(traces)
            .args(["--image", image, "--out"])
            .arg(out);
        if models.contains(&"lstm") {
            let model = self.lstm.as_ref().context("no LSTM trained")?;
            cmd.arg("--model-dir")
                .arg(model)
                .arg("--onnxruntime-library")
                .arg(ort_library());
        }
        progress(format!("state: {}", run_ok(&mut cmd).trim()));
        Ok(())
    }
}

/// ONNX Runtime's library: `$AUGUR_ORT_LIB`, else the one `onnx-models/setup.sh` caches.
fn ort_library() -> PathBuf {
    augur_predictor::lstm::runtime::test_library()
}

/// Writes the split into `dir`; returns (train file, its run count) and the test runs.
fn split(dir: &Path, seed: u64) -> Result<((PathBuf, usize), Vec<Trace>)> {
    let traces = workspace().join("onnx-models/traces/tools-v1.jsonl");
    run_ok(
        Command::new(augurctl_bin())
            .args([
                "predictor",
                "eval",
                "--split",
                "args",
                "--seed",
                &seed.to_string(),
            ])
            .arg("--traces")
            .arg(&traces)
            .arg("--write-split")
            .arg(dir),
    );
    let train = dir.join("train.jsonl");
    let runs = jsonl::read_file(&train)?.len();
    let test = jsonl::read_file(&dir.join("test.jsonl"))?;
    ensure!(runs > 0 && !test.is_empty(), "the split left a half empty");
    Ok(((train, runs), test))
}

/// The test runs grouped by argument set, matched to `workloads.json`, each group written to
/// `dir/<n>.jsonl`; sorted by label.
fn arg_sets(test: &[Trace], dir: &Path) -> Result<Vec<ArgSet>> {
    let file = workspace().join("onnx-models/workloads.json");
    let wf: WorkloadFile = serde_json::from_slice(&std::fs::read(&file)?)
        .with_context(|| format!("{}", file.display()))?;
    ensure!(
        wf.image == IMAGE,
        "{} is not for the {IMAGE} image",
        file.display()
    );
    let mut by_label: BTreeMap<String, Vec<&Trace>> = BTreeMap::new();
    for t in test {
        let label = t
            .header
            .labels
            .get(ARGS_LABEL)
            .context("a test run without its label")?;
        by_label.entry(label.clone()).or_default().push(t);
    }
    std::fs::create_dir_all(dir)?;
    let mut sets = Vec::new();
    for (n, (label, runs)) in by_label.into_iter().enumerate() {
        let entry = wf
            .workloads
            .iter()
            .find(|e| format!("{}/{}", e.group, e.name) == label)
            .with_context(|| format!("{label} is not in {}", file.display()))?;
        let path = dir.join(format!("{n}.jsonl"));
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        for t in runs {
            jsonl::write_trace(t, &mut out, &path)?;
        }
        std::io::Write::flush(&mut out)?;
        sets.push(ArgSet {
            label,
            group: entry.group.clone(),
            argv: entry.argv.clone(),
            runs: path,
        });
    }
    Ok(sets)
}

/// Cross-fitting folds trained beside the benchmark's LSTM (decision 0029).
const FOLDS: u32 = 4;

/// The LSTM trained on `train` only, with its folds, from the cache or trained now (seconds
/// to minutes).
fn trained_lstm(train: &Path) -> Result<PathBuf> {
    let digest = Sha256::digest(std::fs::read(train)?);
    let key: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let model = cache_dir().join(format!("predict-bench/lstm-{key}-folds{FOLDS}"));
    if model.join("model.onnx").exists() {
        progress(format!(
            "LSTM of the training runs: {} (cached)",
            model.display()
        ));
        return Ok(model);
    }
    let python = cache_dir().join("venv-onnx/bin/python");
    ensure!(
        python.exists(),
        "the trainer's venv is missing: bash onnx-models/setup.sh"
    );
    let tmp = model.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    progress(format!(
        "training the LSTM on the training runs into {}",
        model.display()
    ));
    run_ok(
        Command::new(python)
            .arg(workspace().join("onnx-models/train.py"))
            .arg(train)
            .arg("--out")
            .arg(&tmp)
            .args([
                "--epochs",
                "80",
                "--quiet",
                "--folds",
                &FOLDS.to_string(),
                "--label",
            ])
            .arg("predict-bench: the benchmark's training runs only")
            .env("SOURCE_DATE_EPOCH", "1798761600"),
    );
    std::fs::rename(&tmp, &model)?;
    Ok(model)
}

/// Pushes `tools` and converts it with `augurctl image convert` into `dir/registry/data`, using
/// a registry in this process's namespace that stops again; returns its largest layer.
fn prepare_image(dir: &TestDir) -> Result<String> {
    progress(format!(
        "pushing {IMAGE} (images.sh builds it if missing) and converting it"
    ));
    let registry = Registry::start(&dir.join("registry"));
    registry.push_images(&[IMAGE]);
    let plain = registry.image(&format!("{IMAGE}:latest"));
    let esgz = registry.image(&format!("{IMAGE}:esgz"));
    run_ok(Command::new(augurctl_bin()).args(["image", "convert", "--quiet", &plain, &esgz]));
    let layers = layers(&registry.host(), IMAGE, "esgz")?;
    layers
        .into_iter()
        .max_by_key(|(_, size)| *size)
        .map(|(d, _)| d)
        .context("the image has no layers")
}
