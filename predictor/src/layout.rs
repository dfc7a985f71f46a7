//! What an image holds, as far as prediction needs it: the files stored in more than one
//! chunk, each as its chunks in file order ([`Layout`]). A run that has begun to read such a
//! file (a compiler's `cc1`, an interpreter's binary) nearly always reads the rest of it: the
//! loader maps it whole and execution faults its pages in (decision 0031).
//!
//! The daemon builds a run's layout from the TOCs of its lazily mounted layers. A recorded
//! run carries no TOC, so the evaluator and `augurctl predictor train-state` stand the chunk
//! records of the recorded runs in for it ([`Layout::from_traces`]): the chunks some run read
//! of each file. On the project's traces that names the same chunks as the images' files do
//! (checked against the `tools` image's files; see the decision).

use std::collections::BTreeMap;

use crate::chunk::{ChunkId, FastMap};
use crate::trace::Trace;

/// One file's chunks in file order, with their sizes in bytes.
pub type FileChunks = Vec<(ChunkId, u32)>;

/// A file's chunks known so far, by offset in the file.
type ByOffset = BTreeMap<u64, (ChunkId, u32)>;

/// The multi-chunk files of a run's image, and where each of their chunks sits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    files: Vec<FileChunks>,
    /// Chunk → (file, index in it); the first file wins for bytes stored twice.
    at: FastMap<ChunkId, (u32, u32)>,
}

impl Layout {
    /// The layout of `files` (each in file order); files of fewer than two chunks are left
    /// out, since nothing follows their one chunk.
    pub fn new(files: impl IntoIterator<Item = FileChunks>) -> Layout {
        let mut layout = Layout::default();
        for file in files.into_iter().filter(|f| f.len() > 1) {
            let Ok(f) = u32::try_from(layout.files.len()) else {
                break;
            };
            for (k, (chunk, _)) in (0u32..).zip(&file) {
                layout.at.entry(*chunk).or_insert((f, k));
            }
            layout.files.push(file);
        }
        layout
    }

    /// The layout recorded runs show: per layer and file, the chunks any of `traces` read, by
    /// offset.
    pub fn from_traces<'a>(traces: impl IntoIterator<Item = &'a Trace>) -> Layout {
        // (layer, file) → the chunks read of it, by offset.
        let mut files: BTreeMap<(&str, &str), ByOffset> = BTreeMap::new();
        for trace in traces {
            for c in &trace.chunks {
                let Some(layer) = trace.header.layers.get(c.layer as usize) else {
                    continue;
                };
                files
                    .entry((layer.as_str(), c.file.as_str()))
                    .or_default()
                    .insert(c.file_offset, (c.digest, c.size));
            }
        }
        Layout::new(files.into_values().map(|f| f.into_values().collect()))
    }

    /// Whether no file has more than one chunk.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The multi-chunk files.
    pub fn files(&self) -> &[FileChunks] {
        &self.files
    }

    /// The file holding `chunk` (an index into [`Layout::files`]) and the chunk's index in it.
    pub fn locate(&self, chunk: ChunkId) -> Option<(usize, usize)> {
        self.at.get(&chunk).map(|&(f, k)| (f as usize, k as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{ChunkRecord, RunHeader};

    fn id(n: u8) -> ChunkId {
        ChunkId([n; 32])
    }

    fn record(n: u8, layer: u32, file: &str, offset: u64) -> ChunkRecord {
        ChunkRecord {
            digest: id(n),
            layer,
            size: 100,
            file: file.into(),
            file_offset: offset,
        }
    }

    fn trace(layers: &[&str], chunks: Vec<ChunkRecord>) -> Trace {
        let mut t = Trace::new(RunHeader {
            image: "img".into(),
            workload: String::new(),
            layers: layers.iter().map(|l| (*l).to_owned()).collect(),
            started_unix_ms: 0,
            labels: Default::default(),
        });
        t.chunks = chunks;
        t
    }

    #[test]
    fn single_chunk_files_are_left_out_and_chunks_are_found_in_file_order() {
        let layout = Layout::new([
            vec![(id(1), 10)],
            vec![(id(2), 10), (id(3), 10), (id(4), 5)],
        ]);
        assert_eq!(layout.files().len(), 1);
        assert_eq!(layout.locate(id(3)), Some((0, 1)));
        assert_eq!(layout.locate(id(1)), None);
        assert!(Layout::new([vec![(id(1), 10)]]).is_empty());
    }

    #[test]
    fn traces_are_merged_per_layer_and_file_by_offset() {
        // Two runs read different chunks of one file; a file of the same name in another layer
        // is another file.
        let a = trace(
            &["sha256:l0", "sha256:l1"],
            vec![
                record(3, 1, "usr/bin/cc1", 200),
                record(1, 1, "usr/bin/cc1", 0),
            ],
        );
        let b = trace(
            &["sha256:l1"],
            vec![
                record(2, 0, "usr/bin/cc1", 100),
                record(9, 0, "etc/passwd", 0),
            ],
        );
        let c = trace(&["sha256:other"], vec![record(7, 0, "usr/bin/cc1", 0)]);
        let layout = Layout::from_traces([&a, &b, &c]);
        assert_eq!(layout.files().len(), 1);
        let chunks: Vec<ChunkId> = layout.files()[0].iter().map(|(c, _)| *c).collect();
        assert_eq!(chunks, vec![id(1), id(2), id(3)]);
        assert_eq!(layout.locate(id(7)), None);
    }
}
