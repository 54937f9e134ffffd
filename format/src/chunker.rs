//! Content-defined chunking with FastCDC 2020.
//!
//! Chunking restarts at every file, so a file's chunks depend only on its own
//! bytes. The parameters travel in every manifest; the crate version is
//! pinned and the golden vectors below fail if an upgrade moves a cut point,
//! which would silently break deduplication against everything already stored.

use std::io::{self, Read};

use fastcdc::v2020::{Normalization, cut, select_masks};
use serde::{Deserialize, Serialize};

use crate::FormatError;
use crate::digest::{Digest, file_digest};

/// The largest chunk any manifest may describe; bounds memory per chunk.
pub const MAX_CHUNK_SIZE: u32 = 4 << 20;

/// FastCDC 2020 parameters (normalization level 1, gear seed 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkParams {
    fn default() -> Self {
        Self { min: 16 << 10, avg: 64 << 10, max: 256 << 10 }
    }
}

impl ChunkParams {
    /// Checks the parameters are ones the chunker accepts and we can hold in memory.
    pub fn validate(&self) -> Result<(), FormatError> {
        let Self { min, avg, max } = *self;
        let ok = (64..=1 << 20).contains(&min)
            && (256..=4 << 20).contains(&avg)
            && (1024..=MAX_CHUNK_SIZE).contains(&max)
            && min <= avg
            && avg <= max
            && min % 2 == 0
            && avg % 2 == 0
            && max % 2 == 0;
        if ok { Ok(()) } else { Err(FormatError::InvalidChunkParams { min, avg, max }) }
    }

    fn masks(&self) -> (u64, u64) {
        select_masks(self.avg as usize, Normalization::Level1)
    }

    /// Length of the next chunk at the start of `window`. `window` must hold
    /// at least `max` bytes unless it is the end of the file.
    fn next_cut(&self, window: &[u8], masks: (u64, u64)) -> usize {
        let (s, l) = masks;
        let (_, n) = cut(window, self.min as usize, self.avg as usize, self.max as usize, s, l, s << 1, l << 1);
        n
    }

    /// The leading chunk lengths of `window` that are final: those that
    /// start at least `max` bytes before its end, or all of them at `eof`.
    /// The rest must be cut again once more bytes follow. Lets a reader
    /// chunk a stream from its own buffer (the push keeps the bytes it
    /// hashed, to pack them without reading the file again).
    pub fn complete_cuts(&self, window: &[u8], eof: bool) -> Vec<usize> {
        let masks = self.masks();
        let max = self.max as usize;
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < window.len() && (window.len() - pos >= max || eof) {
            let n = self.next_cut(&window[pos..], masks).max(1);
            out.push(n);
            pos += n;
        }
        out
    }

    /// Cut points of an in-memory buffer, as `(offset, len)` pairs.
    pub fn cut_points(&self, data: &[u8]) -> Vec<(usize, usize)> {
        let masks = self.masks();
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            let n = self.next_cut(&data[pos..], masks).max(1);
            out.push((pos, n));
            pos += n;
        }
        out
    }
}

/// One chunk of a file, as found by [`chunk_reader`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkInfo {
    pub offset: u64,
    pub len: u32,
    pub digest: Digest,
}

/// A chunked file: its chunks, size and [`file_digest`] (derived from the
/// chunks, so chunking reads every byte once, for the chunk digests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileChunks {
    pub chunks: Vec<ChunkInfo>,
    pub size: u64,
    pub digest: Digest,
}

const STREAM_BUFFER: usize = 8 << 20;

/// Chunks everything `reader` yields, holding at most a few MiB.
/// To chunk many files, reuse a [`Chunker`]: it keeps its buffer.
pub fn chunk_reader<R: Read>(params: &ChunkParams, reader: R) -> io::Result<FileChunks> {
    Chunker::new(*params).chunk(reader)
}

/// A chunker with a reusable read buffer (allocating and zeroing a fresh
/// 8 MiB buffer per file dominated the cost of chunking many small files).
pub struct Chunker {
    params: ChunkParams,
    buf: Vec<u8>,
}

impl Chunker {
    pub fn new(params: ChunkParams) -> Self {
        Self::with_buffer(params, STREAM_BUFFER)
    }

    fn with_buffer(params: ChunkParams, buffer: usize) -> Self {
        Self { params, buf: vec![0u8; buffer.max(2 * params.max as usize)] }
    }

    /// Chunks everything `reader` yields.
    pub fn chunk<R: Read>(&mut self, mut reader: R) -> io::Result<FileChunks> {
        let params = &self.params;
        let buf = &mut self.buf;
        let masks = params.masks();
        let max = params.max as usize;
        let (mut len, mut offset, mut eof) = (0usize, 0u64, false);
        let mut chunks = Vec::new();
        loop {
            while !eof && len < buf.len() {
                match reader.read(&mut buf[len..]) {
                    Ok(0) => eof = true,
                    Ok(n) => len += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            let mut pos = 0;
            // Cut only where the window is complete: the same points as for the whole file.
            while pos < len && (len - pos >= max || eof) {
                let n = params.next_cut(&buf[pos..len], masks).max(1);
                let bytes = &buf[pos..pos + n];
                chunks.push(ChunkInfo { offset, len: n as u32, digest: Digest::of(bytes) });
                offset += n as u64;
                pos += n;
            }
            buf.copy_within(pos..len, 0);
            len -= pos;
            if eof && len == 0 {
                let digest = file_digest(offset, chunks.iter().map(|c: &ChunkInfo| (c.digest, c.len)));
                return Ok(FileChunks { chunks, size: offset, digest });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use aetherfs_util::pseudo_random;

    #[test]
    fn golden_cut_points() {
        let data = pseudo_random(2 << 20, 0x5eed);
        let lens: Vec<usize> = ChunkParams::default().cut_points(&data).iter().map(|c| c.1).collect();
        assert_eq!(Digest::of(&data).to_string(), GOLDEN_DIGEST, "the test data itself changed");
        assert_eq!(lens, GOLDEN_LENS, "FastCDC cut points moved: chunking format changed");
        let fc = chunk_reader(&ChunkParams::default(), &data[..]).unwrap();
        assert_eq!(fc.digest.to_string(), GOLDEN_FILE_DIGEST, "the file digest's derivation changed");
    }

    /// BLAKE3 of the input bytes (b3sum), and its AetherFS file digest.
    const GOLDEN_DIGEST: &str = "blake3:a936e2b44f5591b87f612520cfe047acd9a66d44b5a5f877af5961d0829be77d";
    const GOLDEN_FILE_DIGEST: &str = "blake3:ac05000880e9178fee016916ac82bf5eb24d6822f9f5ed886f33b3a116cc7a65";
    const GOLDEN_LENS: &[usize] = &[
        70860, 32337, 69488, 147106, 80103, 19470, 35570, 67267, 41465, 26848, 68082, 83047, 140936, 216461, 86767,
        72455, 130483, 45945, 35398, 62093, 42331, 113856, 43231, 42272, 70884, 16592, 22440, 132241, 27559, 53565,
    ];

    #[test]
    fn stream_matches_slice_across_buffer_boundaries() {
        let params = ChunkParams::default();
        let data = pseudo_random(3_000_000, 7);
        let expected = params.cut_points(&data);
        for buffer in [params.max as usize * 2, 600_001, 8 << 20] {
            let got = Chunker::with_buffer(params, buffer).chunk(&data[..]).unwrap();
            let got: Vec<(usize, usize)> = got.chunks.iter().map(|c| (c.offset as usize, c.len as usize)).collect();
            assert_eq!(got, expected, "buffer {buffer}");
        }
        let fc = chunk_reader(&params, &data[..]).unwrap();
        assert_eq!(fc.size, data.len() as u64);
        let listed = expected.iter().map(|&(o, l)| (Digest::of(&data[o..o + l]), l as u32));
        assert_eq!(fc.digest, file_digest(data.len() as u64, listed));
        for c in &fc.chunks {
            let s = c.offset as usize;
            assert_eq!(c.digest, Digest::of(&data[s..s + c.len as usize]));
            assert!(c.len <= params.max);
        }
    }

    #[test]
    fn complete_cuts_match_the_whole_file() {
        let params = ChunkParams::default();
        let data = pseudo_random(1_500_000, 11);
        let expected: Vec<usize> = params.cut_points(&data).iter().map(|c| c.1).collect();
        let (mut got, mut pos) = (Vec::new(), 0);
        for end in [300_000, 700_001, 1_200_000, data.len()] {
            let cuts = params.complete_cuts(&data[pos..end], end == data.len());
            pos += cuts.iter().sum::<usize>();
            got.extend(cuts);
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn empty_and_tiny_inputs() {
        let params = ChunkParams::default();
        let fc = chunk_reader(&params, &b""[..]).unwrap();
        assert!(fc.chunks.is_empty());
        assert_eq!(fc.digest, file_digest(0, []));
        let fc = chunk_reader(&params, &b"abc"[..]).unwrap();
        assert_eq!(fc.chunks.len(), 1);
        assert_eq!(fc.chunks[0].len, 3);
    }

    #[test]
    fn an_insertion_only_moves_nearby_cuts() {
        let params = ChunkParams::default();
        let data = pseudo_random(4 << 20, 11);
        let mut edited = data.clone();
        edited.splice(1_000_000..1_000_000, b"inserted bytes".iter().copied());
        let a: std::collections::HashSet<_> =
            params.cut_points(&data).iter().map(|&(o, l)| Digest::of(&data[o..o + l])).collect();
        let b = params.cut_points(&edited);
        let shared = b.iter().filter(|&&(o, l)| a.contains(&Digest::of(&edited[o..o + l]))).count();
        assert!(shared + 3 >= b.len(), "only {shared} of {} chunks survived an insertion", b.len());
    }

    #[test]
    fn params_validation() {
        assert!(ChunkParams::default().validate().is_ok());
        assert!(ChunkParams { min: 0, avg: 64, max: 128 }.validate().is_err());
        assert!(ChunkParams { min: 16 << 10, avg: 64 << 10, max: 64 << 20 }.validate().is_err());
        assert!(ChunkParams { min: 128 << 10, avg: 64 << 10, max: 256 << 10 }.validate().is_err());
    }
}
