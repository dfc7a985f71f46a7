//! A model directory as `onnx-models/train.py` writes it, read and checked without ONNX
//! Runtime: `meta.json` (format, opset, input and output names and shapes, window, file
//! hashes), `vocab.json`, `golden.json`, and the bytes of `model.onnx`. The checks that need
//! the runtime (the graph's own signature, the golden outputs) are in [`super::session`]; the
//! comparison of one golden case is [`check_golden`], here, so it is testable alone.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::error::LstmError;
use super::vocab::Vocab;

/// The `meta.json` format version this build reads.
pub const FORMAT_VERSION: u32 = 1;
/// The ONNX opset the trainer exports.
pub const OPSET: u32 = 17;
/// The graph's input: token ids, int64 `[batch, seq]`.
pub const INPUT: &str = "tokens";
/// The graph's output: next-token logits, float32 `[batch, vocab]`.
pub const OUTPUT: &str = "logits";

#[derive(Debug, Clone, Deserialize)]
struct Tensor {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    shape: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
struct VocabMeta {
    size: usize,
}

#[derive(Debug, Clone, Deserialize)]
struct Timing {
    median_gap_us: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Training {
    #[serde(default)]
    images: Vec<String>,
    /// The training runs, each as [`run_key`]; absent in models trained before it was
    /// recorded.
    #[serde(default)]
    run_keys: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
struct Files {
    #[serde(rename = "model.onnx")]
    model: String,
    #[serde(rename = "vocab.json")]
    vocab: String,
    #[serde(rename = "golden.json")]
    golden: String,
}

/// The parts of `meta.json` the daemon uses (the rest is provenance for people).
#[derive(Debug, Clone, Deserialize)]
pub struct Meta {
    format_version: u32,
    model: String,
    opset: u32,
    inputs: Vec<Tensor>,
    outputs: Vec<Tensor>,
    vocab: VocabMeta,
    timing: Timing,
    files: Files,
    #[serde(default)]
    training: Training,
    /// Tokens per training window: the model is fed at most this many.
    pub window: usize,
    /// What the training traces were (`synthetic`, a node name, ...).
    #[serde(default)]
    pub label: String,
    /// When it was trained.
    #[serde(default)]
    pub created: String,
}

impl Meta {
    /// Median time between two first accesses in the training traces, µs (a fallback for the
    /// expected time of need before a run or the node has shown its own pace).
    pub fn median_gap_us(&self) -> u64 {
        self.timing.median_gap_us
    }

    /// The images of the training traces (empty if the trainer did not record them).
    pub fn images(&self) -> &[String] {
        &self.training.images
    }

    /// The training runs as [`run_key`]s (`None` if the trainer did not record them).
    pub fn run_keys(&self) -> Option<&[String]> {
        self.training.run_keys.as_deref()
    }
}

/// How `meta.json` names a training run: `"<image> <started_unix_ms>"`, the run line's
/// `image` and `started_unix_ms` (`onnx-models/train.py` writes the same).
pub fn run_key(image: &str, started_unix_ms: u64) -> String {
    format!("{image} {started_unix_ms}")
}

/// The cross-fitting folds beside a model (`<dir>/folds/<n>/`, `train.py --folds`), in
/// order: each a model directory of its own, trained on the runs not in its fold. None if
/// there is no `folds` directory.
pub fn fold_dirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let folds = dir.join("folds");
    let entries = match std::fs::read_dir(&folds) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.join("meta.json").is_file() {
            dirs.push(path);
        }
    }
    // `folds/2` before `folds/10`.
    dirs.sort_by_key(|p| {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        (
            name.as_deref().and_then(|n| n.parse::<u64>().ok()),
            p.clone(),
        )
    });
    Ok(dirs)
}

/// One golden case: an input and what its top tokens' logits must be.
#[derive(Debug, Clone, Deserialize)]
pub struct GoldenCase {
    /// The input tokens.
    pub tokens: Vec<i64>,
    /// The expected top tokens, highest first.
    pub top: Vec<GoldenTop>,
}

/// One expected token and its logit.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct GoldenTop {
    /// The token.
    pub token: i64,
    /// Its logit.
    pub logit: f64,
}

#[derive(Debug, Clone, Deserialize)]
struct GoldenFile {
    version: u32,
    tolerance: f64,
    cases: Vec<GoldenCase>,
}

/// Golden inputs and outputs.
#[derive(Debug, Clone)]
pub struct Golden {
    /// Largest allowed absolute difference of a logit.
    pub tolerance: f64,
    /// The cases.
    pub cases: Vec<GoldenCase>,
}

/// A model directory whose files are read and consistent; the graph is not yet run.
#[derive(Debug, Clone)]
pub struct ModelDir {
    /// Where it was read from (symbolic links resolved).
    pub dir: PathBuf,
    /// Its `meta.json`.
    pub meta: Meta,
    /// Its vocabulary.
    pub vocab: Vocab,
    /// Its golden cases.
    pub golden: Golden,
    /// The bytes of `model.onnx`.
    pub onnx: Vec<u8>,
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>, LstmError> {
    let path = dir.join(name);
    std::fs::read(&path).map_err(|source| LstmError::ModelFile { path, source })
}

fn sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut text = String::with_capacity(71);
    text.push_str("sha256:");
    digest
        .iter()
        .for_each(|b| text.push_str(&format!("{b:02x}")));
    text
}

impl ModelDir {
    /// Reads `dir` and checks everything that needs no runtime; the error names the check.
    ///
    /// A symbolic link (a node's `models/current`) is resolved once, first: every file comes
    /// from the same version even if the link is switched meanwhile, and [`ModelDir::dir`] is
    /// the version's own directory (its name is the model's version in metrics).
    pub fn read(dir: &Path) -> Result<Self, LstmError> {
        let invalid = |check: &str, reason: String| LstmError::invalid(dir, check, reason);
        let resolved = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
        let dir = resolved.as_path();
        let meta: Meta = serde_json::from_slice(&read(dir, "meta.json")?)
            .map_err(|e| invalid("meta.json", e.to_string()))?;
        check_meta(&meta).map_err(|r| invalid("meta.json", r))?;
        let onnx = read(dir, "model.onnx")?;
        let vocab_bytes = read(dir, "vocab.json")?;
        let golden_bytes = read(dir, "golden.json")?;
        for (name, bytes, want) in [
            ("model.onnx", &onnx, &meta.files.model),
            ("vocab.json", &vocab_bytes, &meta.files.vocab),
            ("golden.json", &golden_bytes, &meta.files.golden),
        ] {
            let got = sha256(bytes);
            if &got != want {
                return Err(invalid(
                    "file hashes",
                    format!("{name} is {got}, meta.json says {want} (damaged or half-copied?)"),
                ));
            }
        }
        let vocab = Vocab::parse(&vocab_bytes).map_err(|r| invalid("vocab.json", r))?;
        if vocab.len() != meta.vocab.size {
            return Err(invalid(
                "vocab.json",
                format!("{} tokens, meta.json says {}", vocab.len(), meta.vocab.size),
            ));
        }
        let golden =
            parse_golden(&golden_bytes, vocab.len()).map_err(|r| invalid("golden.json", r))?;
        Ok(ModelDir {
            dir: dir.to_owned(),
            meta,
            vocab,
            golden,
            onnx,
        })
    }
}

fn check_meta(meta: &Meta) -> Result<(), String> {
    if meta.format_version != FORMAT_VERSION {
        return Err(format!(
            "format version {}, this build reads {FORMAT_VERSION}",
            meta.format_version
        ));
    }
    if meta.model != "lstm" || meta.opset != OPSET {
        return Err(format!(
            "a {:?} model with opset {}, expected \"lstm\" with opset {OPSET}",
            meta.model, meta.opset
        ));
    }
    let size = serde_json::Value::from(meta.vocab.size);
    let want_in = [(INPUT, "int64", ["batch".into(), "seq".into()])];
    let want_out = [(OUTPUT, "float32", ["batch".into(), size])];
    let same = |got: &[Tensor], want: &[(&str, &str, [serde_json::Value; 2])]| {
        got.len() == want.len()
            && got
                .iter()
                .zip(want)
                .all(|(g, w)| g.name == w.0 && g.ty == w.1 && g.shape == w.2)
    };
    if !same(&meta.inputs, &want_in) || !same(&meta.outputs, &want_out) {
        return Err(format!(
            "inputs/outputs must be {INPUT} int64 [batch, seq] and {OUTPUT} float32 [batch, {}]",
            meta.vocab.size
        ));
    }
    if meta.window == 0 || meta.window > 4096 {
        return Err(format!("window {} is not in 1..=4096", meta.window));
    }
    Ok(())
}

fn parse_golden(bytes: &[u8], vocab: usize) -> Result<Golden, String> {
    let file: GoldenFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if file.version != FORMAT_VERSION {
        return Err(format!("version {}, this build reads 1", file.version));
    }
    if !(file.tolerance > 0.0 && file.tolerance < 1.0) {
        return Err(format!("tolerance {} is not in (0, 1)", file.tolerance));
    }
    if file.cases.is_empty() {
        return Err("no cases: a model cannot be validated without them".into());
    }
    let in_range = |t: i64| usize::try_from(t).is_ok_and(|t| t < vocab);
    for (i, case) in file.cases.iter().enumerate() {
        if case.tokens.is_empty() || case.top.is_empty() {
            return Err(format!("case {i} has no tokens or no expected output"));
        }
        if !case
            .tokens
            .iter()
            .chain(case.top.iter().map(|t| &t.token))
            .all(|&t| in_range(t))
        {
            return Err(format!(
                "case {i} names a token outside the vocabulary of {vocab}"
            ));
        }
    }
    Ok(Golden {
        tolerance: file.tolerance,
        cases: file.cases,
    })
}

/// Compares the logits the graph computed for a golden case with the expected ones: each
/// expected top token's logit within `tolerance`, and no token above the expected best by
/// more than `tolerance` (ties may reorder, a different winner may not).
pub fn check_golden(case: &GoldenCase, logits: &[f32], tolerance: f64) -> Result<(), String> {
    let Some(best) = case.top.first() else {
        return Ok(());
    };
    for want in &case.top {
        let got = usize::try_from(want.token)
            .ok()
            .and_then(|t| logits.get(t))
            .ok_or_else(|| {
                format!(
                    "the output has {} logits, no token {}",
                    logits.len(),
                    want.token
                )
            })?;
        if (f64::from(*got) - want.logit).abs() > tolerance {
            return Err(format!(
                "token {}: logit {got}, expected {} (tolerance {tolerance})",
                want.token, want.logit
            ));
        }
    }
    let (top, max) = logits
        .iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |acc, (i, &l)| if l > acc.1 { (i, l) } else { acc },
        );
    if f64::from(max) > best.logit + tolerance {
        return Err(format!(
            "token {top} has logit {max}, above the expected best token {} ({})",
            best.token, best.logit
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_are_the_model_directories_under_folds_in_numeric_order() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            fold_dirs(dir.path()).unwrap().is_empty(),
            "no folds directory"
        );
        for fold in ["10", "2", "not-a-model"] {
            std::fs::create_dir_all(dir.path().join("folds").join(fold)).unwrap();
        }
        for fold in ["10", "2"] {
            std::fs::write(dir.path().join("folds").join(fold).join("meta.json"), b"{}").unwrap();
        }
        let found = fold_dirs(dir.path()).unwrap();
        let names: Vec<_> = found.iter().map(|p| p.file_name().unwrap()).collect();
        assert_eq!(names, ["2", "10"]);
    }

    fn case() -> GoldenCase {
        GoldenCase {
            tokens: vec![1, 3],
            top: vec![
                GoldenTop {
                    token: 2,
                    logit: 5.0,
                },
                GoldenTop {
                    token: 0,
                    logit: 4.0,
                },
            ],
        }
    }

    #[test]
    fn golden_outputs_within_tolerance_pass_and_ties_may_reorder() {
        assert_eq!(check_golden(&case(), &[4.0, 1.0, 5.0, 0.5], 1e-3), Ok(()));
        assert_eq!(
            check_golden(&case(), &[4.0005, 1.0, 4.9995, 0.5], 1e-3),
            Ok(())
        );
        // Token 3 ties with the best within the tolerance: not a different winner.
        assert_eq!(
            check_golden(&case(), &[4.0, 1.0, 5.0, 5.0005], 1e-3),
            Ok(())
        );
    }

    #[test]
    fn golden_outputs_that_differ_say_which_token_and_by_how_much() {
        let err = check_golden(&case(), &[4.0, 1.0, 5.01, 0.5], 1e-3).unwrap_err();
        assert!(err.starts_with("token 2: logit 5.01, expected 5"), "{err}");
        let err = check_golden(&case(), &[4.0, 1.0, 5.0, 6.0], 1e-3).unwrap_err();
        assert!(err.contains("token 3 has logit 6"), "{err}");
        let err = check_golden(&case(), &[4.0, 1.0], 1e-3).unwrap_err();
        assert!(err.contains("no token 2"), "{err}");
    }

    #[test]
    fn golden_files_are_checked_before_any_graph_runs() {
        let good = br#"{"version":1,"tolerance":0.001,"cases":[{"tokens":[1],"top":[{"token":2,"logit":1.0}]}]}"#;
        assert_eq!(parse_golden(good, 3).unwrap().cases.len(), 1);
        for (text, want) in [
            (&good[..], "outside the vocabulary"),
            (br#"{"version":1,"tolerance":0.001,"cases":[]}"#, "no cases"),
            (br#"{"version":1,"tolerance":5,"cases":[]}"#, "tolerance 5"),
            (
                br#"{"version":1,"tolerance":0.1,"cases":[{"tokens":[],"top":[]}]}"#,
                "no tokens",
            ),
        ] {
            let err = parse_golden(text, 2).unwrap_err();
            assert!(err.contains(want), "{err:?} should say {want:?}");
        }
    }
}
