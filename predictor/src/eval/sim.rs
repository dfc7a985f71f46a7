//! One test run replayed against one model in simulated time.
//!
//! The model is asked for predictions at the start and after every first access to a chunk;
//! predictions the threshold admits ([`crate::policy`]: at or above it, and big chunks held to
//! a bound on expected wasted bytes) that are neither read nor already queued join the
//! prefetch queue, ordered by deadline (now + expected time of need). The link takes the head
//! of the queue whenever it is free; a transfer starts one latency after the request and lasts
//! size / bandwidth; transfers do not overlap. A demand fetch (a miss, or a queued chunk the run
//! reads before its turn) goes before the queue but waits for the transfer in progress.
//!
//! Only chunks the run could fetch are prefetched: those of its own layers, as far as any
//! loaded trace (training or test) places them. The daemon's prefetcher locates a predicted
//! chunk in the layers mounted for the container and drops what it cannot find, so a model
//! that predicts another image's chunks wastes nothing there, and does not here either.
//!
//! The gaps between the trace's accesses are taken as the workload's own pace, and a read that
//! waits (a miss, a late prefetch) delays every later read by as long: the program cannot run
//! ahead of its data. (A recorded gap also holds whatever the recorded run itself waited, so
//! absolute stalls are upper bounds; comparisons between models are what the numbers are for.)

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::metrics::Tally;
use super::{Catalogue, EvalOptions};
use crate::chunk::{ChunkId, FastMap, FastSet};
use crate::error::Error;
use crate::model::{Access, Prediction, Predictor, RunContext, RunId};
use crate::policy::worth_prefetching;
use crate::trace::{AccessSource, Trace};

const RUN: RunId = RunId(1);

#[derive(Debug, Clone, Copy)]
enum Fetch {
    Queued {
        issued_us: u64,
        size: u32,
        probability: f32,
    },
    Prefetched {
        done_us: u64,
        size: u32,
        probability: f32,
        used: bool,
    },
    Demanded,
}

/// The link and the prefetch queue.
#[derive(Debug)]
struct Link {
    latency_us: u64,
    bytes_per_s: u64,
    free_us: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, ChunkId)>>,
    fetches: FastMap<ChunkId, Fetch>,
}

impl Link {
    fn new(opts: &EvalOptions) -> Self {
        Link {
            latency_us: opts.network.latency_us,
            bytes_per_s: opts.network.bandwidth_bytes_per_s.max(1),
            free_us: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            fetches: FastMap::default(),
        }
    }

    fn transfer_us(&self, size: u32) -> u64 {
        (u64::from(size) * 1_000_000).div_ceil(self.bytes_per_s)
    }

    fn enqueue(
        &mut self,
        chunk: ChunkId,
        size: u32,
        probability: f32,
        now_us: u64,
        deadline_us: u64,
    ) {
        self.fetches.insert(
            chunk,
            Fetch::Queued {
                issued_us: now_us,
                size,
                probability,
            },
        );
        self.queue.push(Reverse((deadline_us, self.seq, chunk)));
        self.seq += 1;
    }

    /// Starts every queued transfer the link picks up by `t_us`.
    fn advance_to(&mut self, t_us: u64, tally: &mut Tally) {
        while let Some(&Reverse((_, _, chunk))) = self.queue.peek() {
            let Some(&Fetch::Queued {
                issued_us,
                size,
                probability,
            }) = self.fetches.get(&chunk)
            else {
                self.queue.pop();
                continue;
            };
            if self.free_us.max(issued_us) > t_us {
                break;
            }
            self.queue.pop();
            let start = self.free_us.max(issued_us + self.latency_us);
            let done_us = start + self.transfer_us(size);
            self.free_us = done_us;
            self.fetches.insert(
                chunk,
                Fetch::Prefetched {
                    done_us,
                    size,
                    probability,
                    used: false,
                },
            );
            tally.prefetched += 1;
            tally.prefetched_bytes += u64::from(size);
        }
    }

    /// A fetch the reader waits for; returns when its bytes are in.
    fn demand(&mut self, chunk: ChunkId, size: u32, t_us: u64) -> u64 {
        let start = self.free_us.max(t_us + self.latency_us);
        let done_us = start + self.transfer_us(size);
        self.free_us = done_us;
        self.fetches.insert(chunk, Fetch::Demanded);
        done_us
    }
}

/// Replays `trace` against `model`, asking for at most `max` predictions at a time.
pub fn simulate(
    model: &mut dyn Predictor,
    trace: &Trace,
    opts: &EvalOptions,
    catalogue: &Catalogue,
    max: usize,
) -> Tally {
    let mut tally = Tally {
        runs: 1,
        ..Tally::default()
    };
    let mut link = Link::new(opts);
    let mut seen = FastSet::default();
    let fetchable = catalogue.fetchable(trace);
    model.start_run(RUN, &RunContext::from_header(&trace.header));
    let issue = |link: &mut Link, seen: &FastSet<ChunkId>, preds: Vec<Prediction>, now: u64| {
        for p in preds {
            let Some(&size) = fetchable.get(&p.chunk) else {
                continue;
            };
            if worth_prefetching(p.probability, u64::from(size), opts.threshold)
                && !seen.contains(&p.chunk)
                && !link.fetches.contains_key(&p.chunk)
            {
                let deadline = now.saturating_add(p.expected_in.as_micros() as u64);
                link.enqueue(p.chunk, size, p.probability, now, deadline);
            }
        }
    };
    issue(&mut link, &seen, model.predict(RUN, max), 0);
    let mut end_us = 0;
    let mut delay_us = 0;
    for access in trace.model_accesses() {
        let t = access.at.as_micros() as u64 + delay_us;
        end_us = end_us.max(t);
        if !seen.insert(access.chunk) {
            model.observe(
                RUN,
                &Access {
                    source: AccessSource::Hit,
                    ..access
                },
            );
            continue;
        }
        link.advance_to(t, &mut tally);
        let (source, stall) = first_access(&mut link, &mut tally, access.chunk, access.size, t);
        delay_us += stall;
        model.observe(RUN, &Access { source, ..access });
        issue(&mut link, &seen, model.predict(RUN, max), t);
    }
    link.advance_to(end_us, &mut tally);
    settle(&link, &mut tally);
    model.finish_run(RUN, None);
    tally
}

/// Classifies the first access to a chunk and does the fetch it needs; returns where it was
/// served from and how long the reader waited.
fn first_access(
    link: &mut Link,
    tally: &mut Tally,
    chunk: ChunkId,
    size: u32,
    t: u64,
) -> (AccessSource, u64) {
    tally.accessed += 1;
    tally.accessed_bytes += u64::from(size);
    let (source, stall) = match link.fetches.get(&chunk).copied() {
        Some(Fetch::Prefetched {
            done_us,
            size: fetched,
            probability,
            ..
        }) => {
            link.fetches.insert(
                chunk,
                Fetch::Prefetched {
                    done_us,
                    size: fetched,
                    probability,
                    used: true,
                },
            );
            tally.used += 1;
            if done_us <= t {
                tally.timely += 1;
                tally.timely_bytes += u64::from(size);
                tally.lead_us.push(t - done_us);
            } else {
                tally.late += 1;
            }
            (AccessSource::PrefetchHit, done_us.saturating_sub(t))
        }
        Some(Fetch::Queued { .. }) => {
            tally.late += 1;
            (AccessSource::Miss, link.demand(chunk, size, t) - t)
        }
        Some(Fetch::Demanded) | None => {
            tally.missed += 1;
            (AccessSource::Miss, link.demand(chunk, size, t) - t)
        }
    };
    tally.stall_us += stall;
    (source, stall)
}

/// At the end of the run: unused transfers are waste, queued ones are cancelled; every
/// transfer's probability and outcome feed the calibration error.
fn settle(link: &Link, tally: &mut Tally) {
    let mut outcomes: Vec<(ChunkId, f32, bool)> = Vec::new();
    for (chunk, fetch) in &link.fetches {
        match *fetch {
            Fetch::Prefetched {
                size,
                probability,
                used,
                ..
            } => {
                if !used {
                    tally.wasted_bytes += u64::from(size);
                }
                outcomes.push((*chunk, probability, used));
            }
            Fetch::Queued { .. } => tally.cancelled += 1,
            Fetch::Demanded => {}
        }
    }
    outcomes.sort_by_key(|o| o.0);
    tally
        .outcomes
        .extend(outcomes.into_iter().map(|(_, p, used)| (p, used)));
}

/// The no-prefetch baseline: never predicts anything.
#[derive(Debug)]
pub struct NoPrefetch;

/// The oracle: knows the test run and, at its start, predicts every chunk it will read, with
/// certainty and at the time it will be read.
#[derive(Debug)]
pub struct Oracle {
    plan: Vec<Prediction>,
}

impl Oracle {
    /// An oracle for `trace`.
    pub fn new(trace: &Trace) -> Self {
        let plan = trace
            .first_accesses()
            .into_iter()
            .map(|a| Prediction {
                chunk: a.chunk,
                probability: 1.0,
                expected_in: a.at,
            })
            .collect();
        Oracle { plan }
    }
}

impl Predictor for NoPrefetch {
    fn name(&self) -> &str {
        "none"
    }
    fn start_run(&mut self, _: RunId, _: &RunContext) {}
    fn observe(&mut self, _: RunId, _: &Access) {}
    fn predict(&mut self, _: RunId, _: usize) -> Vec<Prediction> {
        Vec::new()
    }
    fn finish_run(&mut self, _: RunId, _: Option<&Trace>) {}
    fn save_state(&self) -> Result<Vec<u8>, Error> {
        Ok(Vec::new())
    }
    fn load_state(&mut self, _: &[u8]) -> Result<(), Error> {
        Ok(())
    }
}

impl Predictor for Oracle {
    fn name(&self) -> &str {
        "oracle"
    }
    fn start_run(&mut self, _: RunId, _: &RunContext) {}
    fn observe(&mut self, _: RunId, _: &Access) {}
    /// Everything, once: the plan is handed over at the first call.
    fn predict(&mut self, _: RunId, max: usize) -> Vec<Prediction> {
        let mut plan = std::mem::take(&mut self.plan);
        plan.truncate(max);
        plan
    }
    fn finish_run(&mut self, _: RunId, _: Option<&Trace>) {}
    fn save_state(&self) -> Result<Vec<u8>, Error> {
        Ok(Vec::new())
    }
    fn load_state(&mut self, _: &[u8]) -> Result<(), Error> {
        Ok(())
    }
}
