//! Unit tests of the eStargz format module: blobs made by our writer from tars built with the
//! `tar` crate, hand-made TOCs for what a writer would never produce, and footers byte by byte.

mod chunks;
pub(crate) mod fixtures;
mod footer_toc;
mod malformed;
mod tree;
mod writer;
