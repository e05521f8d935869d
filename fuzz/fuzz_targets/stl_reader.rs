//! Fuzz the STL reader (ASCII and binary).
#![no_main]

use libfuzzer_sys::fuzz_target;
use negvol_volume::read_stl_from_bytes;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = read_stl_from_bytes(data) {
        assert!(m.vertices.iter().flatten().all(|x| x.is_finite()));
        let _ = m.is_closed();
        let _ = m.signed_volume();
    }
});
