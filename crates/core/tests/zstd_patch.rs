//! The vendored zstd patch (`vendor/zstd/PATCHED.md`): `encode_all` and `decode_all` with
//! per-thread reused contexts give the same bytes back as the streaming decoder, and refuse a
//! frame cut short. The upstream crate's own tests need assets the vendored copy leaves out.

/// Round trips through the reused contexts: empty, small, large, two concatenated frames,
/// several levels in turn; a frame cut short or damaged is an error.
#[test]
fn reused_contexts_round_trip_and_refuse_damage() {
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i % 251) as u8 ^ (i >> 13) as u8)
        .collect();
    for (data, level) in [
        (&b""[..], 3),
        (&b"hello"[..], 1),
        (&big[..], 3),
        (&big[..], 9),
    ] {
        let frame = zstd::encode_all(data, level).unwrap();
        assert_eq!(zstd::decode_all(&frame[..]).unwrap(), data);
        let mut streamed = Vec::new();
        zstd::stream::copy_decode(&frame[..], &mut streamed).unwrap();
        assert_eq!(streamed, data);
    }
    let mut two = zstd::encode_all(&b"first "[..], 3).unwrap();
    two.extend(zstd::encode_all(&big[..1000], 3).unwrap());
    let mut want = b"first ".to_vec();
    want.extend(&big[..1000]);
    assert_eq!(zstd::decode_all(&two[..]).unwrap(), want);
    let frame = zstd::encode_all(&big[..], 3).unwrap();
    assert!(zstd::decode_all(&frame[..frame.len() / 2]).is_err());
    let mut bad = frame.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0xff;
    assert!(zstd::decode_all(&bad[..]).map(|d| d != big).unwrap_or(true));
    // The context is usable again after an error.
    assert_eq!(zstd::decode_all(&frame[..]).unwrap(), big);
}
