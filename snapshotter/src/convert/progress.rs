//! What a conversion tells its caller while it runs. The library only emits [`Event`]s; the
//! `augurctl` binary decides what to print and how often (byte counts arrive on every read and
//! write, so a renderer throttles them).

use std::sync::Arc;

/// Receives events; called from async tasks and blocking threads alike, so it must be cheap.
pub type Progress = Arc<dyn Fn(&Event) + Send + Sync>;

/// A progress callback that ignores everything.
pub fn silent() -> Progress {
    Arc::new(|_| {})
}

/// Which layer an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerId {
    /// The platform of the image it belongs to (`linux/amd64`), when known from an index.
    pub platform: Option<String>,
    /// Position in the manifest, 1-based.
    pub index: usize,
    /// Number of layers in the manifest.
    pub count: usize,
    /// The source layer's digest.
    pub digest: String,
}

/// One step of a conversion.
#[derive(Debug, Clone)]
pub enum Event {
    /// An image manifest is about to be converted.
    Image {
        /// Its platform, when chosen from an index.
        platform: Option<String>,
        /// The source manifest's digest.
        digest: String,
        /// How many layers it has.
        layers: usize,
    },
    /// A layer's work starts.
    LayerStart {
        /// The layer.
        layer: LayerId,
        /// Its media type.
        media_type: String,
        /// Its size in the source.
        size: u64,
    },
    /// Conversion progress: compressed bytes of the source read, eStargz bytes written.
    Converting {
        /// The layer.
        layer: LayerId,
        /// Source bytes read so far (of the layer's size).
        read: u64,
        /// eStargz bytes written so far.
        written: u64,
    },
    /// Upload (or copy into a layout) progress.
    Uploading {
        /// The layer.
        layer: LayerId,
        /// Bytes sent so far (restarts at 0 if a request is retried).
        sent: u64,
        /// Bytes to send.
        total: u64,
    },
    /// A layer is done.
    LayerDone {
        /// The layer.
        layer: LayerId,
        /// What became of it.
        outcome: LayerOutcome,
    },
    /// A manifest or index was stored at the destination.
    Stored {
        /// What was stored (`manifest`, `index`).
        what: &'static str,
        /// Its digest.
        digest: String,
        /// Where (the tagged reference, or `repo@digest` for an index's members).
        reference: String,
    },
}

/// What became of one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerOutcome {
    /// Rewritten as eStargz.
    Converted {
        /// The new blob's digest.
        digest: String,
        /// Its size.
        size: u64,
        /// Whether it had to be sent (false: the destination had it already).
        uploaded: bool,
    },
    /// Already eStargz: copied as it is.
    AlreadyEstargz {
        /// Whether it had to be sent (false: the destination had it already).
        uploaded: bool,
    },
}
