//! A validated model: a [`ModelDir`] and an ONNX Runtime session of its graph, admitted only
//! if the graph's signature is the one `meta.json` declares and every golden case gives the
//! expected logits. This is what "the daemon validates a new model" runs; it blocks (reading
//! files, building the session, running the cases: about 0.2 s), so callers run it off async
//! workers.

use std::path::Path;

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;

use ort::value::{Tensor, TensorElementType, ValueType};

use super::error::LstmError;
use super::model_dir::{self, INPUT, ModelDir, OUTPUT};
use super::runtime;

/// A graph input or output as validation compares it: name, and element type and shape if it
/// is a tensor (-1 for a dynamic dimension).
type Signature = Vec<(String, Option<(TensorElementType, Vec<i64>)>)>;

/// A model directory with a session that passed validation.
#[derive(Debug)]
pub struct LoadedModel {
    /// The directory's contents.
    pub files: ModelDir,
    session: Session,
}

impl LoadedModel {
    /// Reads, checks and validates the model in `dir` with the ONNX Runtime library at
    /// `library`. The error names the check that failed.
    pub fn load(dir: &Path, library: &Path) -> Result<Self, LstmError> {
        let env = runtime::environment(library)?;
        let files = ModelDir::read(dir)?;
        let session = Session::builder(&env)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| LstmError::Runtime(e.to_string()))?
            .with_intra_threads(1)
            .map_err(|e| LstmError::Runtime(e.to_string()))?
            .commit_from_memory(&files.onnx)
            .map_err(|e| LstmError::invalid(dir, "model.onnx", e.to_string()))?;
        let mut model = LoadedModel { files, session };
        model.check_signature()?;
        model.check_golden()?;
        Ok(model)
    }

    fn check_signature(&self) -> Result<(), LstmError> {
        let vocab = self.files.vocab.len() as i64;
        let describe = |outlets: &[ort::value::Outlet]| -> Signature {
            outlets
                .iter()
                .map(|o| {
                    let tensor = match o.dtype() {
                        ValueType::Tensor { ty, shape, .. } => Some((*ty, shape.to_vec())),
                        _ => None,
                    };
                    (o.name().to_owned(), tensor)
                })
                .collect()
        };
        let inputs = describe(self.session.inputs());
        let outputs = describe(self.session.outputs());
        let want_in = vec![(
            INPUT.to_owned(),
            Some((TensorElementType::Int64, vec![-1, -1])),
        )];
        let want_out = vec![(
            OUTPUT.to_owned(),
            Some((TensorElementType::Float32, vec![-1, vocab])),
        )];
        if inputs != want_in || outputs != want_out {
            return Err(LstmError::invalid(
                &self.files.dir,
                "graph inputs and outputs",
                format!(
                    "the graph has inputs {inputs:?} and outputs {outputs:?}; expected {want_in:?} and {want_out:?}"
                ),
            ));
        }
        Ok(())
    }

    fn check_golden(&mut self) -> Result<(), LstmError> {
        let golden = self.files.golden.clone();
        for (i, case) in golden.cases.iter().enumerate() {
            let logits = self.logits(&case.tokens)?;
            model_dir::check_golden(case, &logits, golden.tolerance).map_err(|reason| {
                LstmError::invalid(&self.files.dir, format!("golden case {i}"), reason)
            })?;
        }
        Ok(())
    }

    /// The next token's logits after `tokens` (one sequence, batch 1).
    pub fn logits(&mut self, tokens: &[i64]) -> Result<Vec<f32>, LstmError> {
        let input =
            Tensor::from_array(([1usize, tokens.len()], tokens.to_vec().into_boxed_slice()))?;
        let outputs = self.session.run(ort::inputs![INPUT => input])?;
        let (shape, logits) = outputs[OUTPUT].try_extract_tensor::<f32>()?;
        if shape.len() != 2 || logits.len() != self.files.vocab.len() {
            return Err(LstmError::Runtime(format!(
                "the graph returned logits of shape {shape:?}, expected [1, {}]",
                self.files.vocab.len()
            )));
        }
        Ok(logits.to_vec())
    }
}
