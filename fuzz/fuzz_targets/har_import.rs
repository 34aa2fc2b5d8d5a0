//! HAR import (`tapedeck import-har`'s parser and entry conversion) on arbitrary bytes.
//!
//! Properties: no panic; an entry that converts exports to an entry that converts back to the
//! same exchange (an imported tape exports and re-imports without loss).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapedeck_common::har::{self, Entry, entry_to_exchange, exchange_to_entry};

fuzz_target!(|data: &[u8]| {
    let Ok(file) = har::parse(data) else {
        return;
    };
    for entry in file.log.entries.into_iter().take(64) {
        let Ok(ex) = entry_to_exchange(entry, "fuzz") else {
            continue;
        };
        let json = serde_json::to_vec(&exchange_to_entry(&ex)).expect("an entry serializes");
        let again: Entry = serde_json::from_slice(&json).expect("an exported entry parses");
        let back = entry_to_exchange(again, "other").expect("an exported entry converts");
        assert_eq!(back, ex, "export then import changed the exchange");
    }
});
