//! Framing: a BSON length prefix, an archive terminator, or the clean end of the data.
//!
//! Owns the one reader of frames that both forms share and [`BsonFileReader`], which streams
//! the documents of a `.bson` file. It checks a document's length and trailing NUL only; what
//! the documents mean, and what an archive's frames are, is the readers' business.

use std::{
    io::{self, Read},
    path::PathBuf,
};

use super::{FormatError, MAX_DOCUMENT, MIN_DOCUMENT, TERMINATOR};

/// What one read of the framing layer found.
pub(super) enum Frame {
    /// A whole document is in the buffer.
    Document,
    /// The archive terminator (int32 -1).
    Terminator,
    /// The data ended cleanly, before the first byte of a frame.
    End,
}

/// Why a frame could not be read.
pub(super) enum FrameError {
    /// The reader failed (a gzip stream that ends early reports `UnexpectedEof` here).
    Io(io::Error),
    /// The data ended inside a frame.
    Torn,
    /// The length prefix is neither a terminator nor a possible document length.
    BadLength(i32),
    /// The document does not end with a NUL byte.
    NoTrailingNul,
}

/// Reads until `buf` is full or the data ends; returns how much was read.
pub(super) fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Reads one frame into `buf` (cleared first). Memory is bounded by [`MAX_DOCUMENT`].
pub(super) fn read_frame(r: &mut dyn Read, buf: &mut Vec<u8>) -> Result<Frame, FrameError> {
    buf.clear();
    let mut len = [0u8; 4];
    match read_up_to(r, &mut len).map_err(FrameError::Io)? {
        0 => return Ok(Frame::End),
        4 => {}
        _ => return Err(FrameError::Torn),
    }
    if len == TERMINATOR {
        return Ok(Frame::Terminator);
    }
    let size = i32::from_le_bytes(len);
    let size_ok = usize::try_from(size)
        .ok()
        .filter(|s| (MIN_DOCUMENT..=MAX_DOCUMENT).contains(s));
    let Some(size) = size_ok else {
        return Err(FrameError::BadLength(size));
    };
    buf.resize(size, 0);
    buf[..4].copy_from_slice(&len);
    if read_up_to(r, &mut buf[4..]).map_err(FrameError::Io)? != size - 4 {
        return Err(FrameError::Torn);
    }
    if buf[size - 1] != 0 {
        return Err(FrameError::NoTrailingNul);
    }
    Ok(Frame::Document)
}

/// Counts the bytes read through it, for offsets in error messages.
pub(super) struct Counting<R> {
    pub(super) inner: R,
    pub(super) offset: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.offset += n as u64;
        Ok(n)
    }
}

/// Streams the documents of one `.bson` file (already decompressed): each call to
/// [`BsonFileReader::next_into`] yields the next whole document's raw bytes.
///
/// Pass a buffered reader: each document costs two reads.
pub struct BsonFileReader<R> {
    inner: Counting<R>,
    path: PathBuf,
    documents: u64,
}

impl<R: Read> BsonFileReader<R> {
    /// Reads documents from `r`; `path` names the file in errors.
    pub fn new(r: R, path: impl Into<PathBuf>) -> Self {
        Self {
            inner: Counting {
                inner: r,
                offset: 0,
            },
            path: path.into(),
            documents: 0,
        }
    }

    /// Fills `buf` with the next document; `Ok(false)` at a clean end of the file.
    ///
    /// # Errors
    /// A document cut short, a length below 5 or above [`MAX_DOCUMENT`], a missing trailing
    /// NUL, or a read error (a gzip stream that ends early counts as cut short).
    pub fn next_into(&mut self, buf: &mut Vec<u8>) -> Result<bool, FormatError> {
        let start = self.inner.offset;
        match read_frame(&mut self.inner, buf) {
            Ok(Frame::End) => Ok(false),
            Ok(Frame::Document) => {
                self.documents += 1;
                Ok(true)
            }
            Ok(Frame::Terminator) => Err(FormatError::corrupt(
                &self.path,
                format!(
                    "bad document length -1 at offset {start} after {} documents (an archive terminator in a .bson file)",
                    self.documents
                ),
            )),
            Err(FrameError::Torn) => Err(self.truncated()),
            Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Err(self.truncated())
            }
            Err(FrameError::Io(source)) => Err(FormatError::Read {
                path: self.path.clone(),
                error: source,
            }),
            Err(FrameError::BadLength(n)) => Err(FormatError::corrupt(
                &self.path,
                format!(
                    "bad document length {n} at offset {start} after {} documents",
                    self.documents
                ),
            )),
            Err(FrameError::NoTrailingNul) => Err(FormatError::corrupt(
                &self.path,
                format!(
                    "the document at offset {start} (after {} documents) does not end with a NUL byte",
                    self.documents
                ),
            )),
        }
    }

    /// Documents read so far.
    pub fn documents(&self) -> u64 {
        self.documents
    }

    /// Bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.inner.offset
    }

    fn truncated(&self) -> FormatError {
        FormatError::Truncated {
            path: self.path.clone(),
            place: format!(
                "after {} documents (a torn document at offset {})",
                self.documents, self.inner.offset
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::super::fixtures::{dataset_bson, fixture};
    use super::*;

    /// Canonical extjson from `dataset.json` re-encodes to the server's bytes document by
    /// document (no reordering, NaN, -0.0, Decimal128 and the rest survive the trip).
    #[test]
    fn dataset_extjson_reencodes_to_the_dumped_bytes() {
        for ((db, coll), docs) in dataset_bson() {
            let file =
                fs::read(fixture("dump-dir").join(&db).join(format!("{coll}.bson"))).unwrap();
            let mut reader = BsonFileReader::new(file.as_slice(), "x");
            let mut buf = Vec::new();
            for (i, want) in docs.iter().enumerate() {
                assert!(reader.next_into(&mut buf).unwrap());
                assert_eq!(&buf, want, "{db}.{coll} document {i}");
            }
            assert!(!reader.next_into(&mut buf).unwrap());
        }
    }

    /// Lengths out of range and a missing trailing NUL are errors of the reader.
    #[test]
    fn bson_reader_rejects_bad_framing() {
        let mut buf = Vec::new();
        for bad in [
            &[4u8, 0, 0, 0, 0][..],
            &[0xff, 0xff, 0xff, 0x7f, 0][..],
            &[0xff, 0xff, 0xff, 0xff][..],
            &[6, 0, 0, 0, 1, 1][..],
            &[5, 0][..],
            &[5, 0, 0, 0][..],
        ] {
            let mut r = BsonFileReader::new(bad, "t.bson");
            assert!(r.next_into(&mut buf).is_err(), "{bad:?}");
        }
        let mut r = BsonFileReader::new(&[5u8, 0, 0, 0, 0][..], "t.bson");
        assert!(r.next_into(&mut buf).unwrap());
        assert!(!r.next_into(&mut buf).unwrap());
        assert_eq!((r.documents(), r.bytes()), (1, 5));
    }
}
