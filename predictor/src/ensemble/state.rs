//! The ensemble's saved state: a length-prefixed JSON index (calibrators per novelty class,
//! the known workload keys, member names and state sizes) followed by each member's own state
//! bytes, which may be in any format. Version 2 added the novelty classes, version 3 the class
//! of images never seen, version 4 the agreement patterns and replay's shrunk shares (its
//! calibrators learned other scores); an older state is refused (the daemon then starts the
//! models afresh and says so). The view without the members that may abstain (decision 0029)
//! is an optional field of version 4: a state without it loads with that view empty.

use serde::{Deserialize, Serialize};

use super::Ensemble;
use super::agreement::Agreement;
use super::novelty::{Calibrators, KnownKeys};
use super::view::View;
use crate::error::Error;
use crate::stacking::Stacker;

const STATE_VERSION: u32 = 4;

#[derive(Serialize, Deserialize)]
struct Index {
    version: u32,
    combined: Calibrators,
    agreement: Agreement,
    /// The view without the members that may abstain (absent from older states: it starts
    /// empty).
    #[serde(default)]
    without: View,
    stacker: Stacker,
    known: KnownKeys,
    members: Vec<MemberIndex>,
}

#[derive(Serialize, Deserialize)]
struct MemberIndex {
    name: String,
    calibrators: Calibrators,
    state_len: usize,
}

fn fail(reason: impl Into<String>) -> Error {
    Error::State {
        model: "ensemble".to_owned(),
        reason: reason.into(),
    }
}

pub(super) fn save(ensemble: &Ensemble) -> Result<Vec<u8>, Error> {
    let mut blobs = Vec::new();
    let mut members = Vec::new();
    for m in &ensemble.members {
        let state = m.model.save_state()?;
        members.push(MemberIndex {
            name: m.model.name().to_owned(),
            calibrators: m.calibrators.clone(),
            state_len: state.len(),
        });
        blobs.extend_from_slice(&state);
    }
    let index = Index {
        version: STATE_VERSION,
        combined: ensemble.full.combined.clone(),
        agreement: ensemble.full.agreement.clone(),
        without: ensemble.without.clone(),
        stacker: ensemble.stacker.clone(),
        known: ensemble.known.clone(),
        members,
    };
    let json = serde_json::to_vec(&index).map_err(|e| fail(e.to_string()))?;
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out.extend_from_slice(&blobs);
    Ok(out)
}

/// Members the state does not mention keep their state; saved members that are not
/// configured are ignored. If a member rejects its state, the members already loaded get
/// their previous state back, so a failure leaves the ensemble as it was.
pub(super) fn load(ensemble: &mut Ensemble, bytes: &[u8]) -> Result<(), Error> {
    let len_bytes: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| fail("shorter than its header"))?;
    let json_len =
        usize::try_from(u64::from_le_bytes(len_bytes)).map_err(|_| fail("bad header"))?;
    let json = bytes
        .get(8..8usize.saturating_add(json_len))
        .ok_or_else(|| fail("index cut short"))?;
    let index: Index = serde_json::from_slice(json).map_err(|e| fail(e.to_string()))?;
    if index.version != STATE_VERSION {
        return Err(fail(format!(
            "format version {}, this build reads {STATE_VERSION}",
            index.version
        )));
    }
    // Agreement patterns name members by position: saved for another list of members, they
    // would be read as other members' votes, so they start over (the pooled calibrators stay).
    let same_members = index
        .members
        .iter()
        .map(|m| m.name.as_str())
        .eq(ensemble.members.iter().map(|m| m.model.name()));
    let mut at = 8 + json_len;
    let mut blobs = Vec::new();
    for saved in index.members {
        let end = at
            .checked_add(saved.state_len)
            .ok_or_else(|| fail("bad length"))?;
        let blob = bytes
            .get(at..end)
            .ok_or_else(|| fail("member state cut short"))?;
        at = end;
        blobs.push((saved.name, saved.calibrators, blob));
    }
    let mut staged = Vec::new();
    for (i, m) in ensemble.members.iter().enumerate() {
        if let Some((_, calibrator, blob)) = blobs.iter().find(|(n, _, _)| n == m.model.name()) {
            staged.push((i, calibrator.clone(), *blob));
        }
    }
    let mut previous: Vec<(usize, Vec<u8>)> = Vec::new();
    for &(i, _, blob) in &staged {
        let before = ensemble.members[i].model.save_state()?;
        if let Err(e) = ensemble.members[i].model.load_state(blob) {
            for (j, state) in previous {
                // It was this member's own state a moment ago.
                let _ = ensemble.members[j].model.load_state(&state);
            }
            return Err(e);
        }
        previous.push((i, before));
    }
    for (i, mut calibrators, _) in staged {
        calibrators.refresh();
        ensemble.members[i].calibrators = calibrators;
    }
    let mut full = View {
        absent: 0,
        combined: index.combined,
        agreement: if same_members {
            index.agreement
        } else {
            Agreement::default()
        },
    };
    full.refresh();
    ensemble.full = full;
    // A view saved for another set of members that may abstain does not apply.
    let mut without = index.without;
    if same_members && without.absent == ensemble.without.absent {
        without.refresh();
        ensemble.without = without;
    } else {
        ensemble.without = View::without(ensemble.without.absent);
    }
    ensemble.known = index.known;
    // A stacker saved for another set of members does not apply; it starts over.
    if index.stacker.fits(ensemble.members.len()) {
        ensemble.stacker = index.stacker;
    } else {
        ensemble.stacker = Stacker::new(ensemble.members.len());
    }
    Ok(())
}
