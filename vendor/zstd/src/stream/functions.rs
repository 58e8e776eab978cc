use std::io;

use super::Decoder;

/// Decompress from the given source as if using a `Decoder`.
///
/// The input data must be in the zstd frame format.
pub fn decode_all<R: io::Read>(source: R) -> io::Result<Vec<u8>> {
    let mut result = Vec::new();
    copy_decode(source, &mut result)?;
    Ok(result)
}

/// Decompress from the given source as if using a `Decoder`.
///
/// Decompressed data will be appended to `destination`.
pub fn copy_decode<R, W>(source: R, mut destination: W) -> io::Result<()>
where
    R: io::Read,
    W: io::Write,
{
    let mut decoder = Decoder::new(source)?;
    io::copy(&mut decoder, &mut destination)?;
    Ok(())
}

/// Compress all data from the given source (in one call, see the akbackup patch below).
///
/// Result will be in the zstd frame format.
///
/// A level of `0` uses zstd's default (currently `3`).
pub fn encode_all<R: io::Read>(mut source: R, level: i32) -> io::Result<Vec<u8>> {
    // akbackup patch: compress in one call with the input size known (see copy_encode).
    let mut input = Vec::new();
    source.read_to_end(&mut input)?;
    crate::bulk::compress(&input, level)
}

/// Compress all data from the given source (in one call, see the akbackup patch below).
///
/// Compressed data will be appended to `destination`.
///
/// A level of `0` uses zstd's default (currently `3`).
pub fn copy_encode<R, W>(
    mut source: R,
    destination: W,
    level: i32,
) -> io::Result<()>
where
    R: io::Read,
    W: io::Write,
{
    // akbackup patch: a streaming encoder does not know the input size, so zstd sizes its
    // match tables for the level's full window (~0.8 MB at level 3) and clears them for every
    // frame; rustic_core compresses every blob, most of them a few KiB, this way. Compressing
    // the whole input in one call lets zstd size the tables to the input. Same frame format.
    let mut input = Vec::new();
    source.read_to_end(&mut input)?;
    let mut destination = destination;
    destination.write_all(&crate::bulk::compress(&input, level)?)
}

#[cfg(test)]
mod tests {}
