/work/main/vendor/zstd/target/debug/deps/zstd_safe-f20a4188ce180713.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/zstd-safe-7.4.2/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/zstd-safe-7.4.2/src/constants.rs

/work/main/vendor/zstd/target/debug/deps/libzstd_safe-f20a4188ce180713.rlib: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/zstd-safe-7.4.2/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/zstd-safe-7.4.2/src/constants.rs

/work/main/vendor/zstd/target/debug/deps/libzstd_safe-f20a4188ce180713.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/zstd-safe-7.4.2/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/zstd-safe-7.4.2/src/constants.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/zstd-safe-7.4.2/src/lib.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/zstd-safe-7.4.2/src/constants.rs:
