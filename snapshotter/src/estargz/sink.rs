//! The writer's output: a run of gzip members over a counting, hashing writer.
//!
//! The writer decides where members start; the sink knows how many compressed and uncompressed
//! bytes have gone out (member offsets, `innerOffset`s) and hashes both streams on the way, so
//! the blob digest and the diff ID cost no second pass.

use std::io::{self, Write};

use sha2::{Digest, Sha256};

use super::error::FormatError;
use super::toc::format_digest;
use super::writer::WriteSummary;

/// The output: gzip members over a counting, hashing writer.
pub(crate) struct Sink<W: Write> {
    state: State<W>,
    level: flate2::Compression,
    /// Uncompressed bytes written (the tar stream so far).
    pub(crate) uncompressed: u64,
    diff: Sha256,
}

enum State<W: Write> {
    Idle(Counted<W>),
    Open(flate2::write::GzEncoder<Counted<W>>),
    /// Only while switching between the two.
    Gone,
}

/// Counts and hashes what reaches the real output.
struct Counted<W: Write> {
    out: W,
    n: u64,
    hash: Sha256,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.n += n as u64;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl<W: Write> Sink<W> {
    pub(crate) fn new(out: W, level: u32) -> Self {
        Sink {
            state: State::Idle(Counted {
                out,
                n: 0,
                hash: Sha256::new(),
            }),
            level: flate2::Compression::new(level),
            uncompressed: 0,
            diff: Sha256::new(),
        }
    }

    /// Writes uncompressed tar bytes into the open member (opening one if needed).
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<(), FormatError> {
        if let State::Idle(_) = self.state
            && let State::Idle(out) = std::mem::replace(&mut self.state, State::Gone)
        {
            self.state = State::Open(flate2::write::GzEncoder::new(out, self.level));
        }
        let State::Open(gz) = &mut self.state else {
            return Err(output(io::Error::other("writer used after a failure")));
        };
        gz.write_all(bytes).map_err(output)?;
        self.uncompressed += bytes.len() as u64;
        self.diff.update(bytes);
        Ok(())
    }

    /// Pushes pending compressed bytes out (a sync flush), so [`Self::compressed`] is exact.
    pub(crate) fn flush(&mut self) -> Result<(), FormatError> {
        match &mut self.state {
            State::Open(gz) => gz.flush().map_err(output),
            _ => Ok(()),
        }
    }

    /// Ends the open member, if any.
    pub(crate) fn close_member(&mut self) -> Result<(), FormatError> {
        self.state = match std::mem::replace(&mut self.state, State::Gone) {
            State::Open(gz) => State::Idle(gz.finish().map_err(output)?),
            State::Idle(out) => State::Idle(out),
            State::Gone => return Err(output(io::Error::other("writer used after a failure"))),
        };
        Ok(())
    }

    /// Compressed bytes written so far.
    pub(crate) fn compressed(&self) -> u64 {
        match &self.state {
            State::Idle(out) => out.n,
            State::Open(gz) => gz.get_ref().n,
            State::Gone => 0,
        }
    }

    /// Writes bytes that are not part of the tar stream (the footer), after the last member.
    pub(crate) fn write_raw(&mut self, bytes: &[u8]) -> Result<(), FormatError> {
        self.close_member()?;
        match &mut self.state {
            State::Idle(out) => out.write_all(bytes).map_err(output),
            _ => Err(output(io::Error::other("writer used after a failure"))),
        }
    }

    pub(crate) fn summary(self, toc_digest: String) -> Result<WriteSummary, FormatError> {
        let State::Idle(mut out) = self.state else {
            return Err(output(io::Error::other("writer used after a failure")));
        };
        out.flush().map_err(output)?;
        Ok(WriteSummary {
            toc_digest,
            diff_id: format_digest(&self.diff.finalize().into()),
            blob_digest: format_digest(&out.hash.finalize().into()),
            blob_size: out.n,
            uncompressed_size: self.uncompressed,
        })
    }
}

/// An output failure.
pub(crate) fn output(source: io::Error) -> FormatError {
    FormatError::Output { source }
}
