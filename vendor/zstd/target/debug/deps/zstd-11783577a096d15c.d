/work/main/vendor/zstd/target/debug/deps/zstd-11783577a096d15c.d: src/lib.rs src/bulk/mod.rs src/bulk/compressor.rs src/bulk/decompressor.rs src/bulk/tests.rs src/dict.rs src/stream/mod.rs src/stream/read/mod.rs src/stream/read/tests.rs src/stream/write/mod.rs src/stream/write/tests.rs src/stream/functions.rs src/stream/zio/mod.rs src/stream/zio/reader.rs src/stream/zio/writer.rs src/stream/tests.rs src/stream/raw.rs

/work/main/vendor/zstd/target/debug/deps/zstd-11783577a096d15c: src/lib.rs src/bulk/mod.rs src/bulk/compressor.rs src/bulk/decompressor.rs src/bulk/tests.rs src/dict.rs src/stream/mod.rs src/stream/read/mod.rs src/stream/read/tests.rs src/stream/write/mod.rs src/stream/write/tests.rs src/stream/functions.rs src/stream/zio/mod.rs src/stream/zio/reader.rs src/stream/zio/writer.rs src/stream/tests.rs src/stream/raw.rs

src/lib.rs:
src/bulk/mod.rs:
src/bulk/compressor.rs:
src/bulk/decompressor.rs:
src/bulk/tests.rs:
src/dict.rs:
src/stream/mod.rs:
src/stream/read/mod.rs:
src/stream/read/tests.rs:
src/stream/write/mod.rs:
src/stream/write/tests.rs:
src/stream/functions.rs:
src/stream/zio/mod.rs:
src/stream/zio/reader.rs:
src/stream/zio/writer.rs:
src/stream/tests.rs:
src/stream/raw.rs:
