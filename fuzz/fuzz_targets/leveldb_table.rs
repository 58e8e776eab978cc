//! The LevelDB table checker that runs before any table of a store is opened: any input must
//! end in `Ok` or an error, never a panic or an allocation sized by a damaged length.
#![no_main]

use akbackup_core::component::ssdb::table;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(blocks) = table::check(data) {
        // The footer's two blocks at least, each with its 5-byte trailer.
        assert!(blocks >= 2 && data.len() >= 48 + 10, "{blocks} blocks in {} bytes", data.len());
    }
});
