//! The model's vocabulary (`vocab.json`): token numbers to chunk digests and back, and how a
//! run's recent chunks become the token window the model reads.
//!
//! Token 0 is `<oov>` (a chunk outside the vocabulary), 1 is `<start>` (the run's beginning),
//! then the chunks the trainer kept (the most frequent in its traces).

use serde::Deserialize;

use crate::chunk::{ChunkId, FastMap};

/// The out-of-vocabulary token.
pub const OOV: i64 = 0;
/// The run-start token.
pub const START: i64 = 1;
const SPECIAL: [&str; 2] = ["<oov>", "<start>"];

#[derive(Deserialize)]
struct VocabFile {
    version: u32,
    oov_token: i64,
    start_token: i64,
    tokens: Vec<String>,
}

/// Chunk ids ↔ tokens.
#[derive(Debug, Clone)]
pub struct Vocab {
    chunks: Vec<ChunkId>,
    index: FastMap<ChunkId, i64>,
}

impl Vocab {
    /// Parses `vocab.json`; the error says what is wrong.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let file: VocabFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if file.version != 1 {
            return Err(format!("version {}, this build reads 1", file.version));
        }
        if (file.oov_token, file.start_token) != (OOV, START)
            || file.tokens.get(..2) != Some(&SPECIAL.map(str::to_owned)[..])
        {
            return Err("tokens 0 and 1 must be <oov> and <start>".into());
        }
        let mut chunks = Vec::with_capacity(file.tokens.len() - 2);
        let mut index = FastMap::default();
        for (i, text) in file.tokens.iter().enumerate().skip(2) {
            let id = ChunkId::parse(text).map_err(|e| format!("token {i}: {e}"))?;
            if index.insert(id, i as i64).is_some() {
                return Err(format!("token {i}: {text} appears twice"));
            }
            chunks.push(id);
        }
        Ok(Vocab { chunks, index })
    }

    /// A vocabulary of the given chunks (tokens 2, 3, … in order).
    pub fn from_chunks(chunks: Vec<ChunkId>) -> Self {
        let index = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| (*c, i as i64 + 2))
            .collect();
        Vocab { chunks, index }
    }

    /// Tokens in all, special ones included (the width of the model's output).
    pub fn len(&self) -> usize {
        self.chunks.len() + SPECIAL.len()
    }

    /// Whether it holds no chunks at all.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// A chunk's token; [`OOV`] if the vocabulary does not have it.
    pub fn token(&self, chunk: &ChunkId) -> i64 {
        self.index.get(chunk).copied().unwrap_or(OOV)
    }

    /// The chunk a token stands for; `None` for the special tokens and out of range.
    pub fn chunk(&self, token: i64) -> Option<ChunkId> {
        let i = usize::try_from(token).ok()?.checked_sub(SPECIAL.len())?;
        self.chunks.get(i).copied()
    }

    /// The model input for a run that has read `total` chunks, `recent` being its latest ones
    /// (oldest first): `<start>` and all of them while they fit in `window` tokens (as the
    /// trainer's first window of a run), else the last `window` chunks (as its later windows).
    pub fn window(&self, recent: &[ChunkId], total: usize, window: usize) -> Vec<i64> {
        let window = window.max(1);
        if total < window && recent.len() == total {
            std::iter::once(START)
                .chain(recent.iter().map(|c| self.token(c)))
                .collect()
        } else {
            let skip = recent.len().saturating_sub(window);
            recent[skip..].iter().map(|c| self.token(c)).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::chunk_id;

    fn vocab_json(tokens: &[String]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "version": 1, "oov_token": 0, "start_token": 1, "tokens": tokens
        }))
        .unwrap()
    }

    fn names(n: u64) -> Vec<String> {
        let mut t = vec!["<oov>".to_owned(), "<start>".to_owned()];
        t.extend((0..n).map(|i| chunk_id("v", i).to_string()));
        t
    }

    #[test]
    fn tokens_map_both_ways_and_unknown_chunks_are_oov() {
        let vocab = Vocab::parse(&vocab_json(&names(3))).unwrap();
        assert_eq!(vocab.len(), 5);
        assert_eq!(vocab.token(&chunk_id("v", 0)), 2);
        assert_eq!(vocab.token(&chunk_id("v", 2)), 4);
        assert_eq!(vocab.token(&chunk_id("other", 0)), OOV);
        assert_eq!(vocab.chunk(4), Some(chunk_id("v", 2)));
        for special in [OOV, START, 5, -1] {
            assert_eq!(vocab.chunk(special), None);
        }
    }

    #[test]
    fn malformed_vocabularies_say_what_is_wrong() {
        let mut dup = names(2);
        dup.push(dup[2].clone());
        let mut swapped = names(1);
        swapped.swap(0, 1);
        let mut bad = names(1);
        bad[2] = "sha256:zz".into();
        for (bytes, want) in [
            (vocab_json(&dup), "appears twice"),
            (vocab_json(&swapped), "<oov> and <start>"),
            (vocab_json(&bad), "token 2: invalid chunk digest"),
            (vocab_json(&names(0)[..1]), "<oov> and <start>"),
            (
                b"{\"version\":2,\"oov_token\":0,\"start_token\":1,\"tokens\":[]}".to_vec(),
                "version 2",
            ),
            (b"3".to_vec(), "invalid type"),
        ] {
            let err = Vocab::parse(&bytes).unwrap_err();
            assert!(err.contains(want), "{err:?} should say {want:?}");
        }
    }

    #[test]
    fn windows_start_with_the_start_token_until_the_run_outgrows_them() {
        let chunks: Vec<ChunkId> = (0..6).map(|i| chunk_id("v", i)).collect();
        let vocab = Vocab::from_chunks(chunks[..4].to_vec());
        assert_eq!(vocab.window(&[], 0, 4), vec![START]);
        assert_eq!(vocab.window(&chunks[..2], 2, 4), vec![START, 2, 3]);
        assert_eq!(vocab.window(&chunks[..3], 3, 4), vec![START, 2, 3, 4]);
        // Four chunks and the start token no longer fit in four tokens.
        assert_eq!(vocab.window(&chunks[..4], 4, 4), vec![2, 3, 4, 5]);
        // Chunks outside the vocabulary are <oov>; only the last `window` count.
        assert_eq!(vocab.window(&chunks, 6, 4), vec![4, 5, OOV, OOV]);
        // A run whose history was cut short is never taken for a run's beginning.
        assert_eq!(vocab.window(&chunks[3..], 6, 8), vec![5, OOV, OOV]);
    }
}
