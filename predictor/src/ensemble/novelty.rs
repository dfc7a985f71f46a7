//! Novelty: how well the ensemble's past covers a run, so that confidence is calibrated on runs
//! like it.
//!
//! A member's score means different things in a run of a workload seen before and in one never
//! seen: Markov's "0.65" after a shared library is right for the program that taught it and
//! wrong for another program that loads the same library (held-out arguments, a new program in a
//! known image). One calibrator per member cannot tell the two apart, so each member, and the
//! combination, keeps one calibrator per [`Novelty`] class, and a forecast is scored and learned
//! in the class its run was in when it was made:
//!
//! - [`Novelty::NewImage`]: no past run had the image; only what members carry across images
//!   (Markov's shared chunks) can help, and how far to trust it is learned from the first runs
//!   of images, which are few (one per image): the class leans on the calibration over all
//!   classes until it has seen enough ([`Calibrators`]);
//! - [`Novelty::New`]: the image is known, but the run's workload key (its label, or its first
//!   eight distinct chunks; [`crate::workload`]) is not among the keys of past runs;
//! - [`Novelty::Known`]: a past run had this image and key;
//! - [`Novelty::Pending`]: the image is known but the key is not fixed yet (a run's first reads).
//!
//! Training runs calibrate each class out of sample as they do now: the first run of each
//! image is learned as `NewImage`, the first of each other workload as `New`, later ones as
//! `Known`. Every run's key is built from its first reads whatever its class, so the next run
//! of a workload first seen on a new image is `Known`. Keys are remembered per image, at most
//! [`MAX_KEYS`] (the oldest forgotten first), and saved with the ensemble's state.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::calibration::{BINS, Calibrator};
use crate::chunk::ChunkId;
use crate::model::RunContext;
use crate::workload::SignatureBuilder;

/// Workload keys remembered.
pub const MAX_KEYS: usize = 4096;

/// How well past runs cover a run (see the module map).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Novelty {
    /// The image is known; the run's key is not fixed yet.
    Pending = 0,
    /// A past run had this image and workload key.
    Known = 1,
    /// A new workload of a known image.
    New = 2,
    /// An image no past run had.
    NewImage = 3,
}

/// The number of classes.
pub(super) const CLASSES: usize = 4;

impl Novelty {
    /// A forecast's bin in this class, as one small code.
    pub(super) fn code(self, bin: usize) -> u8 {
        (self as usize * BINS + bin.min(BINS - 1)) as u8
    }

    /// The class and bin of a code made by [`Novelty::code`].
    pub(super) fn decode(code: u8) -> (usize, usize) {
        let code = usize::from(code);
        ((code / BINS).min(CLASSES - 1), code % BINS)
    }
}

/// Forecasts in a `NewImage` bin at which the class's own calibration weighs as much as the
/// one over all classes.
pub const CLASS_PRIOR: f32 = 50.0;

/// One calibrator per class, and one over all classes that [`Novelty::NewImage`] leans on
/// where it has seen little: it learns from the first run of each image only, so a node that
/// ran one image has almost nothing there, and a calibrator's empty bins answer the raw score,
/// which lets Markov's "certain" through on an image it never learned. (The other classes
/// learn from most runs; shrinking them too cost time to first output on held-out arguments,
/// docs/decisions/0025-new-image-class-and-shrunk-calibration.md.) The one over all classes is
/// not saved: it records what the classes record (each halves its own counts when full, so it
/// is about their sum), and is rebuilt as their sum on load.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub(super) struct Calibrators {
    classes: [Calibrator; CLASSES],
    #[serde(skip)]
    all: Calibrator,
}

impl Calibrators {
    /// The calibrated probability of `score` in `class`: the class's own; for `NewImage`,
    /// shrunk toward all classes' by how few forecasts its bin has seen.
    pub(super) fn calibrate(&self, class: Novelty, score: f32) -> f32 {
        let own = &self.classes[class as usize];
        if class != Novelty::NewImage {
            return own.calibrate(score);
        }
        let seen = own.trials_at(Calibrator::bin(score));
        lean(
            own.calibrate(score),
            self.all.calibrate(score),
            seen,
            CLASS_PRIOR,
        )
    }

    /// The class's own calibration of `score` (no shrinking).
    pub(super) fn calibrate_own(&self, class: Novelty, score: f32) -> f32 {
        self.classes[class as usize].calibrate(score)
    }

    /// Forecasts recorded in one class and bin.
    pub(super) fn trials_at(&self, class: Novelty, bin: usize) -> f64 {
        self.classes[class as usize].trials_at(bin)
    }

    /// Records outcomes, forecast codes ([`Novelty::code`]) that all came out `hit`, one class
    /// and bin at a time (a calibrator's map is rebuilt once per bin).
    pub(super) fn record_codes(&mut self, codes: &[u8], hit: bool) {
        let mut counts = [[0u32; BINS]; CLASSES];
        codes.iter().for_each(|&code| {
            let (class, bin) = Novelty::decode(code);
            counts[class][bin] += 1;
        });
        for (class, counts) in counts.iter().enumerate() {
            for (bin, &n) in counts.iter().enumerate().filter(|(_, n)| **n > 0) {
                self.record_many(class, bin, hit, f64::from(n));
            }
        }
    }

    /// Records `count` forecasts of one class and bin with the same outcome.
    pub(super) fn record_many(&mut self, class: usize, bin: usize, hit: bool, count: f64) {
        if let Some(calibrator) = self.classes.get_mut(class) {
            calibrator.record_many(bin, hit, count);
            self.all.record_many(bin, hit, count);
        }
    }

    /// Rebuilds the maps, and the one over all classes, after loading.
    pub(super) fn refresh(&mut self) {
        self.classes.iter_mut().for_each(Calibrator::refresh);
        self.all = Calibrator::sum(&self.classes);
    }
}

/// `own`, a calibration from `seen` forecasts, leaning on `pool` while it has seen few: half
/// each at `prior` forecasts.
pub(super) fn lean(own: f32, pool: f32, seen: f64, prior: f32) -> f32 {
    let seen = seen as f32;
    let weight = seen / (seen + prior);
    weight * own + (1.0 - weight) * pool
}

/// The workload keys of past runs, oldest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct KnownKeys {
    keys: VecDeque<(String, String)>,
}

impl KnownKeys {
    fn knows_image(&self, image: &str) -> bool {
        self.keys.iter().any(|(i, _)| i == image)
    }

    fn knows(&self, image: &str, signature: &str) -> bool {
        self.keys.iter().any(|(i, s)| i == image && s == signature)
    }

    /// Remembers a finished run's key (as the newest).
    pub(super) fn remember(&mut self, image: &str, signature: String) {
        self.keys.retain(|(i, s)| !(i == image && *s == signature));
        self.keys.push_back((image.to_owned(), signature));
        while self.keys.len() > MAX_KEYS {
            self.keys.pop_front();
        }
    }

    /// Keys held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }
}

/// A live run's novelty as its first reads come in.
#[derive(Debug, Clone)]
pub(super) struct RunNovelty {
    image: String,
    builder: SignatureBuilder,
    class: Novelty,
}

impl RunNovelty {
    /// The class of a run starting with `ctx`, given the keys known now.
    pub(super) fn start(ctx: &RunContext, known: &KnownKeys) -> Self {
        let mut run = RunNovelty {
            image: ctx.image.clone(),
            builder: SignatureBuilder::new(ctx.label.as_deref()),
            class: Novelty::NewImage,
        };
        if known.knows_image(&ctx.image) {
            run.class = Novelty::Pending;
            run.settle(known);
        }
        run
    }

    /// Notes a chunk the run read for the first time. The key is built in every class: a run
    /// of a new image is `NewImage` from its start, and its key is what the next run of the
    /// same workload must find.
    pub(super) fn observe(&mut self, chunk: ChunkId, known: &KnownKeys) {
        self.builder.observe(chunk);
        if self.class == Novelty::Pending {
            self.settle(known);
        }
    }

    fn settle(&mut self, known: &KnownKeys) {
        if self.builder.is_complete() {
            let key = self.builder.signature();
            self.class = if known.knows(&self.image, &key) {
                Novelty::Known
            } else {
                Novelty::New
            };
        }
    }

    /// The run's class now.
    pub(super) fn class(&self) -> Novelty {
        self.class
    }

    /// The run's image and workload signature, to remember at its end.
    pub(super) fn key(&self) -> (&str, String) {
        (&self.image, self.builder.signature())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(image: &str, label: Option<&str>) -> RunContext {
        RunContext {
            image: image.into(),
            label: label.map(str::to_owned),
            ..RunContext::default()
        }
    }

    #[test]
    fn classes_follow_images_keys_and_first_reads() {
        let mut known = KnownKeys::default();
        assert_eq!(
            RunNovelty::start(&ctx("a", None), &known).class(),
            Novelty::NewImage
        );
        known.remember("a", "label:etl".into());
        assert_eq!(
            RunNovelty::start(&ctx("a", Some("etl")), &known).class(),
            Novelty::Known
        );
        assert_eq!(
            RunNovelty::start(&ctx("a", Some("web")), &known).class(),
            Novelty::New
        );
        assert_eq!(
            RunNovelty::start(&ctx("b", Some("etl")), &known).class(),
            Novelty::NewImage
        );
        // Unlabelled: pending until eight distinct chunks fix the key.
        let mut run = RunNovelty::start(&ctx("a", None), &known);
        for n in 0..7u8 {
            run.observe(ChunkId([n; 32]), &known);
            assert_eq!(run.class(), Novelty::Pending);
        }
        run.observe(ChunkId([7; 32]), &known);
        assert_eq!(run.class(), Novelty::New);
        let (image, key) = run.key();
        known.remember(image, key);
        let mut again = RunNovelty::start(&ctx("a", None), &known);
        (0..8u8).for_each(|n| again.observe(ChunkId([n; 32]), &known));
        assert_eq!(again.class(), Novelty::Known);
    }

    #[test]
    fn the_first_run_of_an_image_is_remembered_by_its_own_key() {
        let mut known = KnownKeys::default();
        let mut first = RunNovelty::start(&ctx("fresh", None), &known);
        assert_eq!(first.class(), Novelty::NewImage);
        (0..9u8).for_each(|n| first.observe(ChunkId([n; 32]), &known));
        assert_eq!(first.class(), Novelty::NewImage);
        let (image, key) = first.key();
        assert!(key.starts_with("first8:"), "{key}");
        known.remember(image, key);
        // The same workload again: known once its first eight chunks are read.
        let mut second = RunNovelty::start(&ctx("fresh", None), &known);
        (0..8u8).for_each(|n| second.observe(ChunkId([n; 32]), &known));
        assert_eq!(second.class(), Novelty::Known);
    }

    #[test]
    fn a_new_image_class_that_has_seen_little_leans_on_all_classes() {
        let mut calibrators = Calibrators::default();
        let bin = Calibrator::bin(0.95);
        // Known runs: a score of 0.95 came true 60 times in 100.
        calibrators.record_many(Novelty::Known as usize, bin, true, 60.0);
        calibrators.record_many(Novelty::Known as usize, bin, false, 40.0);
        // New images: nothing seen, so not the raw 0.95 but about what all classes say.
        let unseen = calibrators.calibrate(Novelty::NewImage, 0.95);
        assert!((unseen - 0.6).abs() < 0.05, "{unseen}");
        // Seen enough, a class answers for itself.
        calibrators.record_many(Novelty::NewImage as usize, bin, true, 1000.0);
        let seen = calibrators.calibrate(Novelty::NewImage, 0.95);
        assert!(seen > 0.9, "{seen}");
        // Loading rebuilds the sum over classes.
        let mut loaded: Calibrators =
            serde_json::from_str(&serde_json::to_string(&calibrators).unwrap()).unwrap();
        loaded.refresh();
        assert_eq!(loaded.calibrate(Novelty::NewImage, 0.95), seen);
        // The other classes answer for themselves, seen or not.
        assert_eq!(
            loaded.calibrate(Novelty::New, 0.95),
            Calibrator::default().calibrate(0.95)
        );
    }

    #[test]
    fn keys_are_bounded_oldest_first_and_codes_round_trip() {
        let mut known = KnownKeys::default();
        for n in 0..MAX_KEYS + 10 {
            known.remember("img", format!("label:{n}"));
        }
        assert_eq!(known.len(), MAX_KEYS);
        assert!(!known.knows("img", "label:0"));
        assert!(known.knows("img", &format!("label:{}", MAX_KEYS + 9)));
        for class in [
            Novelty::Pending,
            Novelty::Known,
            Novelty::New,
            Novelty::NewImage,
        ] {
            for bin in [0, 7, BINS - 1] {
                assert_eq!(Novelty::decode(class.code(bin)), (class as usize, bin));
            }
        }
    }
}
