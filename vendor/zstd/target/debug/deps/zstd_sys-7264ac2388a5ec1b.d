/work/main/vendor/zstd/target/debug/deps/zstd_sys-7264ac2388a5ec1b.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/zstd-sys-2.2.0+zstd.1.6.0/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/zstd-sys-2.2.0+zstd.1.6.0/src/bindings_zstd.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/zstd-sys-2.2.0+zstd.1.6.0/src/bindings_zdict.rs

/work/main/vendor/zstd/target/debug/deps/libzstd_sys-7264ac2388a5ec1b.rlib: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/zstd-sys-2.2.0+zstd.1.6.0/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/zstd-sys-2.2.0+zstd.1.6.0/src/bindings_zstd.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/zstd-sys-2.2.0+zstd.1.6.0/src/bindings_zdict.rs

/work/main/vendor/zstd/target/debug/deps/libzstd_sys-7264ac2388a5ec1b.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/zstd-sys-2.2.0+zstd.1.6.0/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/zstd-sys-2.2.0+zstd.1.6.0/src/bindings_zstd.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/zstd-sys-2.2.0+zstd.1.6.0/src/bindings_zdict.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/zstd-sys-2.2.0+zstd.1.6.0/src/lib.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/zstd-sys-2.2.0+zstd.1.6.0/src/bindings_zstd.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/zstd-sys-2.2.0+zstd.1.6.0/src/bindings_zdict.rs:
