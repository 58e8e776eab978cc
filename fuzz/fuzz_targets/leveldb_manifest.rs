//! Our LevelDB MANIFEST (log format + version edits) parser, which reads live stores.
#![no_main]

use akbackup_core::component::ssdb::manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = manifest::parse(data) {
        assert!(state.valid_len <= data.len(), "valid prefix longer than the input");
    }
});
