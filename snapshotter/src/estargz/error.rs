//! The eStargz format layer's one error type.
//!
//! Every variant names the thing that is wrong (the TOC entry by index and name, the chunk by its
//! place in the blob) and says what to do, because the person reading it sees a layer that will
//! not mount and needs to know whether to rebuild the image, re-fetch the blob or report a bug.
//! TOC problems all end in [`REBUILD`]: a malformed TOC cannot be repaired by the reader.

/// Advice appended to every malformed-TOC message.
pub const REBUILD: &str =
    "rebuild the layer with `ctr-remote image convert --estargz` or `augurctl image convert`";

/// Everything reading or writing eStargz can fail with.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The blob ends in neither the eStargz (51-byte) nor the legacy stargz (47-byte) footer.
    #[error(
        "the blob has no eStargz or legacy stargz footer, so it cannot be pulled lazily; \
         pull it normally or convert the image with `ctr-remote image convert --estargz`"
    )]
    NotEstargz,
    /// The footer names a TOC offset that does not fit in the blob.
    #[error(
        "the footer puts the TOC at byte {toc_offset}, but the blob is {blob_size} bytes \
         ({footer_size} of them footer); the blob is truncated or corrupt, re-fetch it"
    )]
    TocOffsetOutOfRange {
        /// Offset read from the footer.
        toc_offset: u64,
        /// Size of the blob.
        blob_size: u64,
        /// Size of the footer found.
        footer_size: u64,
    },
    /// The TOC gzip stream or the tar inside it does not decode.
    #[error(
        "cannot decompress the TOC (the bytes between the TOC offset and the footer); re-fetch the blob"
    )]
    TocStream {
        /// What gzip or tar reported.
        #[source]
        source: std::io::Error,
    },
    /// The TOC tar's first entry is not `stargz.index.json`.
    #[error("the TOC tar holds {found:?} where `stargz.index.json` was expected; {REBUILD}")]
    TocName {
        /// The name found (lossy UTF-8).
        found: String,
    },
    /// The uncompressed TOC JSON is larger than [`super::MAX_TOC_JSON`].
    #[error("the TOC JSON is over {limit} bytes; refusing to hold it in memory")]
    TocTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The TOC is not the JSON eStargz defines.
    #[error("the TOC JSON does not parse; {REBUILD}")]
    TocJson {
        /// What serde_json reported (with line and column).
        #[source]
        source: serde_json::Error,
    },
    /// The TOC JSON does not have the digest the image manifest promised.
    #[error(
        "the TOC JSON has digest {actual}, but the layer annotation \
         containerd.io/snapshot/stargz/toc.digest says {expected}; the blob or the manifest \
         was altered, re-push the image"
    )]
    TocDigestMismatch {
        /// The annotation's value.
        expected: String,
        /// The digest of the JSON that was read.
        actual: String,
    },
    /// A digest string is not `sha256:` followed by 64 hex digits.
    #[error("{what} {value:?} is not a sha256 digest (`sha256:` and 64 hex digits); {REBUILD}")]
    BadDigest {
        /// Where the digest came from.
        what: String,
        /// The string found.
        value: String,
    },
    /// A TOC entry is malformed.
    #[error("TOC entry #{entry} ({name:?}): {problem}; {REBUILD}")]
    BadEntry {
        /// Index of the entry in `entries`.
        entry: usize,
        /// Its name as written in the TOC.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A regular file's chunks do not cover it exactly once, in order.
    #[error("file {path:?}: {problem}; {REBUILD}")]
    ChunksDoNotTile {
        /// The file's path in the layer.
        path: String,
        /// Which gap or overlap was found.
        problem: String,
    },
    /// A fetched member range does not decompress.
    #[error(
        "a gzip member range of the blob does not decompress; the blob is corrupt or the range \
         is wrong, re-fetch it"
    )]
    Member {
        /// What gzip reported.
        #[source]
        source: std::io::Error,
    },
    /// A chunk lies beyond the end of its decompressed member.
    #[error(
        "chunk of {size} bytes at inner offset {inner_offset} does not fit in its member, which \
         decompresses to {inflated} bytes; the TOC does not match the blob, re-fetch or rebuild it"
    )]
    ChunkOutOfRange {
        /// Where the chunk starts in the decompressed member.
        inner_offset: u64,
        /// Its length.
        size: u64,
        /// Length of the decompressed member.
        inflated: u64,
    },
    /// A chunk's bytes do not have the digest the TOC records.
    #[error(
        "chunk of {size} bytes at inner offset {inner_offset} has sha256 {actual}, but the TOC \
         says {expected}; the blob is corrupt or was altered, re-fetch it"
    )]
    ChunkDigestMismatch {
        /// Where the chunk starts in the decompressed member.
        inner_offset: u64,
        /// Its length.
        size: u64,
        /// The digest the TOC records (hex).
        expected: String,
        /// The digest of the bytes read (hex).
        actual: String,
    },
    /// The writer's input tar does not read.
    #[error("cannot read the input tar; is it an uncompressed tar stream?")]
    InputTar {
        /// What the tar reader reported.
        #[source]
        source: std::io::Error,
    },
    /// The writer's input holds an entry eStargz cannot carry.
    #[error("input tar entry {name:?}: {problem}")]
    Unsupported {
        /// The entry's name (lossy UTF-8).
        name: String,
        /// Why it cannot be converted.
        problem: String,
    },
    /// The writer's output does not accept bytes.
    #[error("cannot write the eStargz blob")]
    Output {
        /// The I/O error of the output.
        #[source]
        source: std::io::Error,
    },
    /// The writer was given options it cannot use.
    #[error("invalid writer options: {0}")]
    Options(String),
}

impl FormatError {
    /// A [`FormatError::BadEntry`] for entry `entry` named `name`.
    pub(crate) fn entry(entry: usize, name: &str, problem: impl Into<String>) -> FormatError {
        FormatError::BadEntry {
            entry,
            name: name.to_owned(),
            problem: problem.into(),
        }
    }
}
