//! The eStargz layer format: reading a layer's table of contents into a filesystem index, getting
//! verified file bytes out of fetched gzip members, and writing eStargz blobs.
//!
//! Pure format logic: no network, no FUSE, no daemon state. The lazy-pull path uses it as
//!
//! 1. [`parse_footer`] on the blob's last [`FOOTER_SIZE`] bytes → where the TOC is;
//! 2. [`decode_toc`] on the TOC's bytes, checked against the layer's
//!    [`TOC_DIGEST_ANNOTATION`] → [`Toc`];
//! 3. [`LayerIndex::from_toc`] → the nodes OverlayFS will see and the chunks behind each file;
//! 4. per read miss: fetch a [`Member`]'s range, [`inflate_member`], then [`chunk_bytes`] for
//!    each chunk it holds ([`LayerIndex::member_chunks`]), which checks the chunk's sha256.
//!
//! [`write_estargz`] is the other direction, for `augurctl image convert` and test fixtures.
//!
//! | module | owns |
//! |---|---|
//! | `footer` | the 51-byte eStargz and 47-byte legacy footers |
//! | `toc` | the JSON TOC: types, decoding, digest strings |
//! | `tree` | TOC entries → directory tree, with containerd's overlay unpacking rules |
//! | `chunks` | file data entries → chunks, gzip members, local data-file slots |
//! | `index` | [`LayerIndex`] and its node/chunk types |
//! | `data` | decompression and digest checks of fetched bytes |
//! | `writer` | tar → eStargz |
//! | `sink` | the writer's gzip members, byte counts and digests |
//! | `time` | RFC 3339 `modtime` |
//! | `error` | [`FormatError`] |
//!
//! The reference is stargz-snapshotter's `estargz` package (format spec: its `docs/estargz.md`).

mod chunks;
mod data;
mod error;
mod footer;
mod index;
mod sink;
mod time;
mod toc;
mod tree;
mod writer;

pub use data::{chunk_bytes, inflate_member, sha256, verify};
pub use error::FormatError;
pub use footer::{FOOTER_SIZE, Footer, LEGACY_FOOTER_SIZE, footer_bytes, parse_footer};
pub use index::{Chunk, DirAttrs, LayerIndex, Member, Node, NodeId, NodeKind, Prefetch, ROOT};
pub(crate) use toc::base64_values;
pub use toc::{
    MAX_TOC_JSON, TOC_DIGEST_ANNOTATION, TOC_TAR_NAME, Toc, TocEntry, UNCOMPRESSED_SIZE_ANNOTATION,
    decode_toc, format_digest, parse_digest,
};
pub use tree::{NO_PREFETCH_LANDMARK, OPAQUE_XATTR, PREFETCH_LANDMARK};
pub use writer::{DEFAULT_CHUNK_SIZE, WriteSummary, WriterOptions, write_estargz};

#[cfg(test)]
pub(crate) mod tests;
