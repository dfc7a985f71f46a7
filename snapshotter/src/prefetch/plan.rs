//! [`Prefetcher::plan`]: the chunks the running models would fetch first for an image that is
//! not running yet (the admin API's `POST /manifest/parse`).
//!
//! The models only predict for runs, so the plan is a dry run on the `augur-predict` thread: the
//! ensemble's learned state is saved, a run of the image starts under [`PLAN_RUN`], is asked for
//! its first predictions and finishes, and the saved state is loaded back. Without the restore,
//! finishing a run that read nothing would count every planned chunk as a wrong prediction in
//! the calibration. Saving and loading cost what a periodic save costs (milliseconds to a few
//! hundred for large replay state), and happen only when an operator asks.

use std::sync::mpsc::SyncSender;
use std::time::Duration;

use augur_predictor::{Ensemble, Prediction, Predictor, RunContext, RunId};

use super::Prefetcher;
use super::predict::Event;

/// The run id of plans; never a live run's (the recorder counts up from 1).
pub const PLAN_RUN: RunId = RunId(u64::MAX - 1);
/// Longest a plan waits for the predictor thread (it may be saving state).
const PLAN_WAIT: Duration = Duration::from_secs(30);

/// A plan asked of the predictor thread: the image's context, how many chunks, where to answer.
#[derive(Debug)]
pub struct PlanRequest {
    /// The image as a run of it would start.
    pub ctx: RunContext,
    /// Predictions wanted at most.
    pub max: usize,
    /// Where the thread sends them.
    pub reply: SyncSender<Option<Vec<Prediction>>>,
}

impl Prefetcher {
    /// The first `max` chunks the models expect a run of `ctx`'s image to read, best first,
    /// without teaching the models anything (blocking: waits for the predictor thread). `None`
    /// if the thread is stopped, did not answer within 30 s, or could not save the models'
    /// state (logged).
    pub fn plan(&self, ctx: RunContext, max: usize) -> Option<Vec<Prediction>> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.send(Event::Plan(Box::new(PlanRequest { ctx, max, reply })));
        answer.recv_timeout(PLAN_WAIT).ok().flatten()
    }
}

/// On the predictor thread: the dry run (see the module docs); `None` if the state cannot be
/// saved (then nothing is asked, so nothing needs restoring).
pub(super) fn dry_run(ensemble: &mut Ensemble, req: &PlanRequest) -> Option<Vec<Prediction>> {
    let saved = match ensemble.save_state() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot plan: the models' state does not save");
            return None;
        }
    };
    ensemble.start_run(PLAN_RUN, &req.ctx);
    let planned = ensemble.predict(PLAN_RUN, req.max);
    ensemble.finish_run(PLAN_RUN, None);
    if let Err(e) = ensemble.load_state(&saved) {
        tracing::error!(error = %e, "the models' state did not load back after a plan");
    }
    Some(planned)
}
