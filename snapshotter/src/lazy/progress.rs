//! A mounted layer's whole-fetch progress ([`LayerProgress`]: compressed bytes whose chunks are
//! all in the cache, of the layer's data), and what [`super::LazyLayers::fetch_now`] did
//! ([`FetchNow`]). Read by the admin API (`GET /layers/{digest}`, `POST
//! /prefetch/layer/{digest}`) and `augurctl prefetch layer --wait`'s progress bar.
//!
//! Progress is counted in members (the gzip streams ranged reads fetch), by their compressed
//! size: the unit the background fetch transfers, so bytes present grow like bytes on the wire.
//! Computing it looks every chunk up in the cache: call it on the blocking pool.

use serde::{Deserialize, Serialize};

use crate::lazy::data::LayerData;

/// How far a mounted layer's whole fetch is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerProgress {
    /// The layer's digest.
    pub digest: String,
    /// The image it was mounted for (the first snapshot's).
    pub image_ref: String,
    /// Compressed bytes of the layer's data (its members, up to the TOC).
    pub size_bytes: u64,
    /// Of those, the bytes whose chunks are all in the cache now.
    pub present_bytes: u64,
    /// Every chunk is in the cache: reads need no network.
    pub complete: bool,
    /// A background fetch of the layer is running.
    pub fetching: bool,
    /// That fetch was asked for over the admin API (it does not wait for quiet).
    pub hurried: bool,
    /// Bytes read from the registry for this layer over its life on this node.
    pub fetched_bytes: u64,
}

/// What [`super::LazyLayers::fetch_now`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchNow {
    /// Nothing to do: every chunk is in the cache.
    Complete(LayerProgress),
    /// A background fetch runs now without waiting for quiet (started, or an idle one hurried).
    Queued(LayerProgress),
}

/// The progress of `data`, mounted as `digest` for `image_ref` (blocking: cache lookups).
pub(crate) fn progress_of(data: &LayerData, digest: &str, image_ref: &str) -> LayerProgress {
    let members = data.index().members();
    let mut size = 0u64;
    let mut present = 0u64;
    for (m, member) in members.iter().enumerate() {
        let len = member.end - member.offset;
        size += len;
        if data.member_present(m as u32) {
            present += len;
        }
    }
    LayerProgress {
        digest: digest.to_owned(),
        image_ref: image_ref.to_owned(),
        size_bytes: size,
        present_bytes: present,
        complete: present == size,
        fetching: false,
        hurried: false,
        fetched_bytes: data
            .stats
            .fetched_bytes
            .load(std::sync::atomic::Ordering::Relaxed),
    }
}
