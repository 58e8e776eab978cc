use std::io;

use super::Decoder;

/// Decompress from the given source as if using a `Decoder`.
///
/// The input data must be in the zstd frame format.
pub fn decode_all<R: io::Read>(mut source: R) -> io::Result<Vec<u8>> {
    // akbackup patch: rustic_core decompresses every blob it reads with `decode_all`; a new
    // `Decoder` creates (allocates and initialises) a zstd context for each one, 5% of a
    // restore's CPU under perf. The thread's context is reset and reused instead. Same
    // output, concatenated frames included; a frame cut short is an error, as before.
    let mut input = Vec::new();
    source.read_to_end(&mut input)?;
    decode_slice(&input)
}

std::thread_local! {
    /// This thread's decompression context (akbackup patch).
    static DCTX: std::cell::RefCell<Option<zstd_safe::DCtx<'static>>> =
        const { std::cell::RefCell::new(None) };
    /// This thread's compressor and its level (akbackup patch).
    static CCTX: std::cell::RefCell<Option<(i32, crate::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

/// Largest output reserved up front from a frame's declared content size: the header is
/// input, and a damaged one must not make us allocate gigabytes before decoding fails.
const MAX_RESERVE: u64 = 64 << 20;

/// [`decode_all`] of a slice, with this thread's reused context (akbackup patch).
fn decode_slice(input: &[u8]) -> io::Result<Vec<u8>> {
    if input.is_empty() {
        return Ok(Vec::new());
    }
    DCTX.with(|cell| {
        let mut slot = cell
            .try_borrow_mut()
            .map_err(|_| io::Error::other("zstd: decompression context in use"))?;
        let dctx = match &mut *slot {
            Some(d) => d,
            None => slot.insert(zstd_safe::DCtx::try_create().ok_or_else(|| {
                io::Error::other("zstd: cannot create a decompression context")
            })?),
        };
        dctx.reset(zstd_safe::ResetDirective::SessionOnly)
            .map_err(crate::map_error_code)?;
        let declared = zstd_safe::get_frame_content_size(input).ok().flatten();
        let reserve = declared.map_or(input.len().saturating_mul(3), |n| {
            std::convert::TryFrom::try_from(n.min(MAX_RESERVE)).unwrap_or(0usize)
        });
        let mut out: Vec<u8> = Vec::with_capacity(reserve.max(64));
        let mut src = zstd_safe::InBuffer::around(input);
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(1 << 16));
            }
            let before = out.len();
            let mut dst = zstd_safe::OutBuffer::around_pos(&mut out, before);
            let hint = dctx
                .decompress_stream(&mut dst, &mut src)
                .map_err(crate::map_error_code)?;
            let progressed = dst.pos() > before;
            let room_left = dst.pos() < dst.capacity();
            drop(dst);
            if src.pos() == input.len() {
                if hint == 0 {
                    return Ok(out);
                }
                if !progressed && room_left {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "incomplete frame",
                    ));
                }
            }
        }
    })
}

/// `bulk::compress` with this thread's compressor, made again only when the level changes
/// (akbackup patch: a new context for every blob was 2% of a backup's CPU under perf).
fn compress_reused(input: &[u8], level: i32) -> io::Result<Vec<u8>> {
    CCTX.with(|cell| {
        let mut slot = cell
            .try_borrow_mut()
            .map_err(|_| io::Error::other("zstd: compression context in use"))?;
        if !matches!(&*slot, Some((l, _)) if *l == level) {
            *slot = Some((level, crate::bulk::Compressor::new(level)?));
        }
        match &mut *slot {
            Some((_, c)) => c.compress(input),
            None => crate::bulk::compress(input, level),
        }
    })
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
    compress_reused(&input, level)
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
    destination.write_all(&compress_reused(&input, level)?)
}

#[cfg(test)]
mod tests {}
