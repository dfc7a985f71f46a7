//! Regular files' `reg`/`chunk` entries → checked [`Chunk`]s, the gzip [`Member`]s they live in,
//! and their places were the chunks packed in blob order.
//!
//! Member ranges follow the reference reader's `nextOffset`: a member starts at an entry's
//! `offset` and runs to the next larger offset any data entry of the TOC starts at, or to the
//! TOC. Entries with an `innerOffset` share the member of their `offset`. Every file's chunks must
//! tile it exactly (`chunkSize` 0 means "to the end of the file") and carry a sha256: the
//! `chunkDigest`, or the file's `digest` when the file is a single chunk.

use std::ops::Range;

use super::error::FormatError;
use super::index::{Chunk, Member, Node, NodeId, NodeKind};
use super::toc::{TocEntry, parse_digest};

/// Chunks, members and slots of a whole layer.
#[derive(Debug)]
pub(crate) struct Placed {
    pub chunks: Vec<Chunk>,
    pub members: Vec<Member>,
    pub by_slot: Vec<u32>,
    pub member_chunks: Vec<Range<u32>>,
    pub data_size: u64,
    /// Each file node's range in `chunks`.
    pub file_ranges: Vec<(NodeId, Range<u32>)>,
}

/// Places the data entries of every file in `raw` (node, its TOC entry indexes, in TOC order).
pub(crate) fn place(
    entries: &[TocEntry],
    nodes: &[Node],
    raw: Vec<(NodeId, Vec<usize>)>,
    toc_offset: u64,
) -> Result<Placed, FormatError> {
    let boundaries = member_starts(entries, toc_offset)?;
    let mut chunks = Vec::new();
    let mut blob_offsets = Vec::new();
    let mut file_ranges = Vec::with_capacity(raw.len());
    for (id, data) in raw {
        let start = to_u32(chunks.len())?;
        for (chunk, offset) in file_chunks(entries, nodes, id, &data)? {
            chunks.push(chunk);
            blob_offsets.push(offset);
        }
        file_ranges.push((id, start..to_u32(chunks.len())?));
    }
    let mut starts = blob_offsets.clone();
    starts.sort_unstable();
    starts.dedup();
    let members: Vec<Member> = starts
        .iter()
        .map(|&offset| {
            let next = boundaries.partition_point(|&b| b <= offset);
            let end = boundaries.get(next).copied().unwrap_or(toc_offset);
            Member { offset, end }
        })
        .collect();
    for (c, offset) in chunks.iter_mut().zip(&blob_offsets) {
        // Every offset is in `starts`, which is sorted.
        c.member = to_u32(starts.partition_point(|s| s < offset))?;
    }
    let slots = slots(&mut chunks, members.len())?;
    Ok(Placed {
        chunks,
        members,
        by_slot: slots.by_slot,
        member_chunks: slots.member_chunks,
        data_size: slots.data_size,
        file_ranges,
    })
}

/// Sorted distinct blob offsets where data entries start; each must lie before the TOC.
fn member_starts(entries: &[TocEntry], toc_offset: u64) -> Result<Vec<u64>, FormatError> {
    let mut starts = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let is_data = (e.kind == "reg" && e.size > 0) || e.kind == "chunk";
        if !is_data {
            continue;
        }
        if e.offset >= toc_offset {
            let problem = format!(
                "its data offset {} is not before the TOC at {toc_offset}",
                e.offset
            );
            return Err(FormatError::entry(i, &e.name, problem));
        }
        starts.push(e.offset);
    }
    starts.sort_unstable();
    starts.dedup();
    Ok(starts)
}

/// The chunks of file `id` (member left 0) with the blob offset of each one's member.
fn file_chunks(
    entries: &[TocEntry],
    nodes: &[Node],
    id: NodeId,
    data: &[usize],
) -> Result<Vec<(Chunk, u64)>, FormatError> {
    let NodeKind::File { size, .. } = nodes[id as usize].kind else {
        return Ok(Vec::new());
    };
    let tile_error = |problem: String| FormatError::ChunksDoNotTile {
        path: super::index::path_in(nodes, id).display().to_string(),
        problem,
    };
    let mut out = Vec::with_capacity(data.len());
    let mut covered = 0u64;
    for (k, &i) in data.iter().enumerate() {
        let e = &entries[i];
        if e.chunk_offset != covered {
            return Err(tile_error(format!(
                "chunk #{k} (TOC entry #{i}) starts at {}, where {covered} was expected",
                e.chunk_offset
            )));
        }
        let len = if e.chunk_size == 0 {
            size.saturating_sub(e.chunk_offset)
        } else {
            e.chunk_size
        };
        let end = covered
            .checked_add(len)
            .filter(|&end| end <= size && len > 0);
        let Some(end) = end else {
            return Err(tile_error(format!(
                "chunk #{k} (TOC entry #{i}) of {len} bytes at {covered} does not fit a file of \
                 {size} bytes"
            )));
        };
        let digest = chunk_digest(entries, data, i)?;
        let chunk = Chunk {
            member: 0,
            inner_offset: e.inner_offset,
            file_offset: covered,
            size: len,
            digest,
            slot: 0,
        };
        out.push((chunk, e.offset));
        covered = end;
    }
    if covered != size {
        return Err(tile_error(format!(
            "its chunks cover {covered} of its {size} bytes"
        )));
    }
    Ok(out)
}

/// The `chunkDigest` of entry `i`, or the file's `digest` if the file is one chunk.
fn chunk_digest(entries: &[TocEntry], data: &[usize], i: usize) -> Result<[u8; 32], FormatError> {
    let e = &entries[i];
    let what = |field: &str| format!("TOC entry #{i} ({:?}): {field}", e.name);
    if !e.chunk_digest.is_empty() {
        return parse_digest(&e.chunk_digest, &what("chunkDigest"));
    }
    let file = &entries[data[0]];
    if data.len() == 1 && !file.digest.is_empty() {
        return parse_digest(&file.digest, &what("digest"));
    }
    Err(FormatError::entry(
        i,
        &e.name,
        "it has no chunkDigest (and the file has no single-chunk digest), so its data cannot be \
         verified",
    ))
}

/// The chunks in slot order.
struct Slots {
    /// Chunk indexes by slot.
    by_slot: Vec<u32>,
    /// Each member's range in `by_slot`.
    member_chunks: Vec<Range<u32>>,
    /// Sum of all chunk sizes.
    data_size: u64,
}

/// Assigns slots in blob order (member, then inner offset).
fn slots(chunks: &mut [Chunk], members: usize) -> Result<Slots, FormatError> {
    let mut by_slot: Vec<u32> = (0..to_u32(chunks.len())?).collect();
    by_slot.sort_by_key(|&c| {
        let c = &chunks[c as usize];
        (c.member, c.inner_offset)
    });
    let mut member_chunks = vec![0..0; members];
    let mut next_slot = 0u64;
    for (pos, &c) in by_slot.iter().enumerate() {
        let chunk = &mut chunks[c as usize];
        chunk.slot = next_slot;
        next_slot = next_slot.checked_add(chunk.size).ok_or_else(|| {
            FormatError::entry(0, "", "the files' sizes add up to over 2^64 bytes")
        })?;
        let range = &mut member_chunks[chunk.member as usize];
        if range.start == range.end {
            *range = to_u32(pos)?..to_u32(pos)?;
        }
        range.end = to_u32(pos + 1)?;
    }
    Ok(Slots {
        by_slot,
        member_chunks,
        data_size: next_slot,
    })
}

fn to_u32(n: usize) -> Result<u32, FormatError> {
    u32::try_from(n).map_err(|_| FormatError::entry(n, "", "the layer has over 2^32 chunks"))
}
