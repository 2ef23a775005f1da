//! Any file handed to `gatewarden replay` must give frames or an error with
//! an offset, never a panic or an unbounded allocation.
#![no_main]

use std::path::Path;

use gatewarden::capture::{CaptureFile, PacketSource};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let reader = Box::new(std::io::Cursor::new(data.to_vec()));
    if let Ok(mut cf) = CaptureFile::from_reader(Path::new("fuzz.pcap"), reader) {
        let mut n = 0;
        while let Ok(Some(frame)) = cf.next_frame() {
            let _ = gatewarden::packet::parse(&frame);
            n += 1;
            if n > 100_000 {
                break;
            }
        }
    }
});
