//! Bytes from the bus must decode to a message or an error, never a panic;
//! whatever decodes must re-encode to the same bytes.
#![no_main]

use gatewarden_proto::messages::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        let again = m.encode();
        assert_eq!(Message::decode(&again).as_ref(), Ok(&m));
    }
});
