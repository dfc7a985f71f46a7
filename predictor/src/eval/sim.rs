//! One test run replayed against one model in simulated time.
//!
//! The model is asked for predictions at the start and after every first access to a chunk;
//! predictions the threshold admits ([`crate::policy`]: at or above it, and big chunks held to
//! a bound on expected wasted bytes) that are neither read nor already queued join the
//! prefetch queue, ordered by deadline (now + expected time of need). A queued chunk the
//! newest predictions no longer admit (fallen below the threshold, or out of them) is
//! retracted before it starts, as the daemon's queue does. The link takes the head
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
use std::time::Duration;

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
        /// The heap entry that stands for it (one retracted and queued again has a new one).
        seq: u64,
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
                seq: self.seq,
            },
        );
        self.queue.push(Reverse((deadline_us, self.seq, chunk)));
        self.seq += 1;
    }

    /// Drops queued (not started) chunks that `admitted` no longer holds; returns how many.
    fn retract(&mut self, admitted: &FastSet<ChunkId>) -> u64 {
        let before = self.fetches.len();
        self.fetches
            .retain(|chunk, f| !matches!(f, Fetch::Queued { .. }) || admitted.contains(chunk));
        // Their heap entries are skipped when they come up (no longer `Queued` with their seq).
        (before - self.fetches.len()) as u64
    }

    /// Starts every queued transfer the link picks up by `t_us`.
    fn advance_to(&mut self, t_us: u64, tally: &mut Tally) {
        while let Some(&Reverse((_, seq, chunk))) = self.queue.peek() {
            let Some(&Fetch::Queued {
                issued_us,
                size,
                probability,
                ..
            }) = self
                .fetches
                .get(&chunk)
                .filter(|f| matches!(f, Fetch::Queued { seq: s, .. } if *s == seq))
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
    let issue = |link: &mut Link,
                 tally: &mut Tally,
                 seen: &FastSet<ChunkId>,
                 preds: Vec<Prediction>,
                 now: u64| {
        let mut admitted = FastSet::default();
        for p in preds {
            let Some(&size) = fetchable.get(&p.chunk) else {
                continue;
            };
            if !worth_prefetching(p.probability, u64::from(size), opts.threshold)
                || seen.contains(&p.chunk)
            {
                continue;
            }
            admitted.insert(p.chunk);
            if !link.fetches.contains_key(&p.chunk) {
                let deadline = now.saturating_add(p.expected_in.as_micros() as u64);
                link.enqueue(p.chunk, size, p.probability, now, deadline);
            }
        }
        tally.cancelled += link.retract(&admitted);
    };
    issue(&mut link, &mut tally, &seen, model.predict(RUN, max), 0);
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
        issue(&mut link, &mut tally, &seen, model.predict(RUN, max), t);
    }
    link.advance_to(end_us, &mut tally);
    settle(&link, &mut tally);
    model.finish_run(RUN, opts.learn_test_runs.then_some(trace));
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

/// The oracle: knows the test run and, at every call, predicts every chunk it has yet to
/// read, with certainty and at the time it will be read (so its queued chunks are never
/// retracted).
#[derive(Debug)]
pub struct Oracle {
    /// Each chunk at the time of its first access.
    plan: Vec<(ChunkId, Duration)>,
    read: FastSet<ChunkId>,
    now: Duration,
}

impl Oracle {
    /// An oracle for `trace`.
    pub fn new(trace: &Trace) -> Self {
        let plan = trace
            .first_accesses()
            .into_iter()
            .map(|a| (a.chunk, a.at))
            .collect();
        Oracle {
            plan,
            read: FastSet::default(),
            now: Duration::ZERO,
        }
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
    fn observe(&mut self, _: RunId, access: &Access) {
        self.read.insert(access.chunk);
        self.now = self.now.max(access.at);
    }
    /// Everything not read yet, in order of need.
    fn predict(&mut self, _: RunId, max: usize) -> Vec<Prediction> {
        self.plan
            .iter()
            .filter(|(chunk, _)| !self.read.contains(chunk))
            .take(max)
            .map(|&(chunk, at)| Prediction {
                chunk,
                probability: 1.0,
                expected_in: at.saturating_sub(self.now),
            })
            .collect()
    }
    fn finish_run(&mut self, _: RunId, _: Option<&Trace>) {}
    fn save_state(&self) -> Result<Vec<u8>, Error> {
        Ok(Vec::new())
    }
    fn load_state(&mut self, _: &[u8]) -> Result<(), Error> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::NetworkProfile;
    use crate::synth::{Program, RunStyle};

    /// Predicts the other branch's chunks (never read by the test run) at its first call;
    /// after that it says them again only if `stubborn`.
    #[derive(Debug)]
    struct Wrong {
        chunks: Vec<ChunkId>,
        stubborn: bool,
        calls: usize,
    }

    impl Predictor for Wrong {
        fn name(&self) -> &str {
            "wrong"
        }
        fn start_run(&mut self, _: RunId, _: &RunContext) {}
        fn observe(&mut self, _: RunId, _: &Access) {}
        fn predict(&mut self, _: RunId, _: usize) -> Vec<Prediction> {
            self.calls += 1;
            if self.calls > 1 && !self.stubborn {
                return Vec::new();
            }
            self.chunks
                .iter()
                .map(|&chunk| Prediction {
                    chunk,
                    probability: 0.9,
                    expected_in: std::time::Duration::from_secs(5),
                })
                .collect()
        }
        fn finish_run(&mut self, _: RunId, _: Option<&Trace>) {}
        fn save_state(&self) -> Result<Vec<u8>, Error> {
            Ok(Vec::new())
        }
        fn load_state(&mut self, _: &[u8]) -> Result<(), Error> {
            Ok(())
        }
    }

    #[test]
    fn queued_prefetches_the_newest_predictions_drop_are_retracted() {
        let prog = Program::new("127.0.0.1:5000/x:esgz", 20, &[40, 40], 3);
        let style = RunStyle::default();
        let (test, other) = (prog.run(0, &style, 1), prog.run(1, &style, 2));
        let catalogue = Catalogue::new([&test, &other].into_iter());
        let read: FastSet<ChunkId> = test.first_accesses().iter().map(|a| a.chunk).collect();
        let chunks: Vec<ChunkId> = other
            .first_accesses()
            .iter()
            .map(|a| a.chunk)
            .filter(|c| !read.contains(c))
            .collect();
        assert!(chunks.len() >= 20, "{}", chunks.len());
        // A slow link: the wrong chunks cannot all start before the run's first read.
        let opts = EvalOptions {
            network: NetworkProfile::CONSTRAINED,
            ..EvalOptions::default()
        };
        let run = |stubborn| {
            let mut model = Wrong {
                chunks: chunks.clone(),
                stubborn,
                calls: 0,
            };
            simulate(&mut model, &test, &opts, &catalogue, usize::MAX)
        };
        let (fickle, stubborn) = (run(false), run(true));
        assert_eq!(stubborn.cancelled, 0, "{stubborn:?}");
        assert!(fickle.cancelled > 0, "{fickle:?}");
        assert!(
            fickle.wasted_bytes < stubborn.wasted_bytes,
            "{} vs {}",
            fickle.wasted_bytes,
            stubborn.wasted_bytes
        );
        assert_eq!(
            fickle.prefetched + fickle.cancelled,
            chunks.len() as u64,
            "every wrong chunk either started before the retraction or was retracted"
        );
    }
}
