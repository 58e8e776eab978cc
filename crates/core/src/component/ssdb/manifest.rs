//! Reading a LevelDB MANIFEST: the log-file record format and the version edits in it.
//!
//! Only what the online checkpoint needs: which table files the last complete version lists,
//! the log number from which the write-ahead logs must be replayed, and where the last
//! complete record ends (a MANIFEST that is being appended may end in a torn record; the
//! copy is cut there, which is what LevelDB itself would read).

use std::collections::BTreeSet;

const BLOCK: usize = 32 * 1024;
const HEADER: usize = 7;
const FULL: u8 = 1;
const FIRST: u8 = 2;
const MIDDLE: u8 = 3;
const LAST: u8 = 4;
const MASK_DELTA: u32 = 0xa282_ead8;

/// The state described by a MANIFEST prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionState {
    /// Live table files: (level, file number).
    pub tables: BTreeSet<(u32, u64)>,
    /// Logs numbered at or above this hold writes not yet in tables.
    pub log_number: u64,
    /// Older log still being flushed (0 when none).
    pub prev_log_number: u64,
    /// Next file number.
    pub next_file: u64,
    /// Last sequence number.
    pub last_sequence: u64,
    /// Bytes of the MANIFEST up to the end of its last complete record.
    pub valid_len: usize,
    /// Complete version edits read.
    pub edits: usize,
}

/// A MANIFEST that cannot be understood.
#[derive(Debug, thiserror::Error)]
#[error("MANIFEST is damaged at byte {offset}: {what}")]
pub struct ManifestError {
    /// Where.
    pub offset: usize,
    /// What.
    pub what: String,
}

/// LevelDB stores CRCs masked (rotated and offset) so a CRC of data holding CRCs stays strong.
pub(crate) fn unmask(masked: u32) -> u32 {
    let rot = masked.wrapping_sub(MASK_DELTA);
    rot.rotate_left(15)
}

/// Splits log-format bytes into logical records; returns them and the end of the last
/// complete one. A torn or corrupt tail ends the reading without an error.
fn records(data: &[u8]) -> (Vec<Vec<u8>>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut valid = 0;
    let mut pending: Option<Vec<u8>> = None;
    while pos < data.len() {
        let left_in_block = BLOCK - pos % BLOCK;
        if left_in_block < HEADER {
            pos += left_in_block;
            continue;
        }
        if pos + HEADER > data.len() {
            break;
        }
        let h = &data[pos..pos + HEADER];
        let crc = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let len = usize::from(u16::from_le_bytes([h[4], h[5]]));
        let kind = h[6];
        let start = pos + HEADER;
        if start + len > data.len() || len > left_in_block - HEADER {
            break;
        }
        let payload = &data[start..start + len];
        if kind == 0 && len == 0 {
            // Preallocated zeroes: the end of what was written.
            break;
        }
        let actual = crc32c::crc32c_append(crc32c::crc32c(&[kind]), payload);
        if actual != unmask(crc) {
            break;
        }
        pos = start + len;
        match kind {
            FULL => {
                out.push(payload.to_vec());
                pending = None;
                valid = pos;
            }
            FIRST => pending = Some(payload.to_vec()),
            MIDDLE => match pending.as_mut() {
                Some(p) => p.extend_from_slice(payload),
                None => break,
            },
            LAST => match pending.take() {
                Some(mut p) => {
                    p.extend_from_slice(payload);
                    out.push(p);
                    valid = pos;
                }
                None => break,
            },
            _ => break,
        }
    }
    (out, valid)
}

/// Reads LevelDB's varints and length-prefixed slices; `None` past the end.
pub(crate) struct Cursor<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn varint(&mut self) -> Option<u64> {
        let mut result = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.data.get(self.pos)?;
            self.pos += 1;
            result |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(result);
            }
        }
        None
    }
    pub(crate) fn slice(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        self.take(len)
    }
    pub(crate) fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let s = self.data.get(self.pos..self.pos.checked_add(len)?)?;
        self.pos += len;
        Some(s)
    }
    fn level(&mut self) -> Option<u32> {
        u32::try_from(self.varint()?).ok()
    }
}

fn apply(state: &mut VersionState, edit: &[u8]) -> Option<()> {
    let mut c = Cursor { data: edit, pos: 0 };
    while c.pos < edit.len() {
        match c.varint()? {
            1 => {
                c.slice()?;
            }
            2 => state.log_number = c.varint()?,
            3 => state.next_file = c.varint()?,
            4 => state.last_sequence = c.varint()?,
            5 => {
                c.level()?;
                c.slice()?;
            }
            6 => {
                let level = c.level()?;
                let number = c.varint()?;
                state.tables.remove(&(level, number));
            }
            7 => {
                let level = c.level()?;
                let number = c.varint()?;
                c.varint()?;
                c.slice()?;
                c.slice()?;
                state.tables.insert((level, number));
            }
            9 => state.prev_log_number = c.varint()?,
            _ => return None,
        }
    }
    Some(())
}

/// Reads the version a MANIFEST's complete records describe.
///
/// # Errors
/// A complete record that is not a valid version edit (not a torn tail: that is cut off).
pub fn parse(data: &[u8]) -> Result<VersionState, ManifestError> {
    let (recs, valid_len) = records(data);
    let mut state = VersionState {
        valid_len,
        ..VersionState::default()
    };
    for (i, r) in recs.iter().enumerate() {
        apply(&mut state, r).ok_or_else(|| ManifestError {
            offset: i,
            what: "unknown version edit field".to_string(),
        })?;
        state.edits += 1;
    }
    if state.edits == 0 {
        return Err(ManifestError {
            offset: 0,
            what: "no complete version edit".to_string(),
        });
    }
    Ok(state)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn mask(crc: u32) -> u32 {
        crc.rotate_right(15).wrapping_add(MASK_DELTA)
    }

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// Encodes one record per edit (each fits in a block).
    pub(crate) fn encode(edits: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in edits {
            let crc = mask(crc32c::crc32c_append(crc32c::crc32c(&[FULL]), e));
            out.extend_from_slice(&crc.to_le_bytes());
            out.extend_from_slice(&u16::try_from(e.len()).unwrap().to_le_bytes());
            out.push(FULL);
            out.extend_from_slice(e);
        }
        out
    }

    fn edit(log: Option<u64>, add: &[(u32, u64)], del: &[(u32, u64)]) -> Vec<u8> {
        let mut e = Vec::new();
        if let Some(l) = log {
            varint(2, &mut e);
            varint(l, &mut e);
        }
        for (level, n) in add {
            varint(7, &mut e);
            varint(u64::from(*level), &mut e);
            varint(*n, &mut e);
            varint(1000, &mut e);
            varint(1, &mut e);
            e.push(b'a');
            varint(1, &mut e);
            e.push(b'z');
        }
        for (level, n) in del {
            varint(6, &mut e);
            varint(u64::from(*level), &mut e);
            varint(*n, &mut e);
        }
        e
    }

    #[test]
    /// Edits add and delete tables and move the log number; a torn tail is cut off.
    fn parses_edits_and_cuts_torn_tail() {
        let data = encode(&[
            edit(Some(3), &[(0, 5), (0, 6)], &[]),
            edit(Some(9), &[(1, 8)], &[(0, 5)]),
        ]);
        let s = parse(&data).unwrap();
        assert_eq!(s.log_number, 9);
        assert_eq!(s.tables, BTreeSet::from([(0, 6), (1, 8)]));
        assert_eq!(s.valid_len, data.len());
        let mut torn = data.clone();
        torn.extend_from_slice(&encode(&[edit(Some(12), &[], &[(0, 6)])])[..9]);
        let t = parse(&torn).unwrap();
        assert_eq!(t, s);
        let mut corrupt = data.clone();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        let c = parse(&corrupt).unwrap();
        assert_eq!(c.edits, 1);
        assert_eq!(c.log_number, 3);
    }
}
