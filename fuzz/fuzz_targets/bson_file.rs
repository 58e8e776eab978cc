//! The `.bson` document framing reader of dump directories and restores.
#![no_main]

use akbackup_core::component::mongodb::format::BsonFileReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reader = BsonFileReader::new(data, "fuzz.bson");
    let mut buf = Vec::new();
    while let Ok(true) = reader.next_into(&mut buf) {
        assert!(buf.len() >= 5, "a document shorter than a BSON header");
    }
});
