//! `verdict.json` as `tapedeck ticket` reads it (and turns it into ticket.md / ticket.json), on
//! arbitrary bytes.
//!
//! Properties: no panic; a verdict that makes a ticket makes one with a 64-hex fingerprint, a
//! title, a body that starts with the title, and a ticket.json that serializes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapedeck_ticket::{TicketOptions, ticket_for};

fuzz_target!(|data: &[u8]| {
    let opts = TicketOptions::new(std::path::Path::new("report"), std::path::Path::new("out"));
    let Ok(Some(ticket)) = ticket_for(data, &opts) else {
        return;
    };
    assert_eq!(ticket.fingerprint.len(), 64, "{}", ticket.fingerprint);
    assert!(ticket.fingerprint.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(!ticket.title.is_empty());
    assert!(ticket.body.starts_with(&format!("# {}", ticket.title)), "{}", ticket.body);
    serde_json::to_vec(&ticket).expect("ticket.json serializes");
});
