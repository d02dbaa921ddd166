//! The relay-apps sub-buffer parser on arbitrary buffer contents and
//! geometry: errors for corrupt padding words, never a panic, and a data
//! range that always lies inside its sub-buffer.
#![no_main]

use relay_reader::source::relay_app_locate;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() < 10 {
        return;
    }
    let subbuf_size = u64::from(u16::from_le_bytes([data[0], data[1]]));
    let n_subbufs = u64::from(data[2]);
    let seq = u64::from(u32::from_le_bytes([data[3], data[4], data[5], data[6]]));
    let map = &data[7..];
    if let Ok(loc) = relay_app_locate(map, seq, subbuf_size, n_subbufs) {
        let start = (seq % n_subbufs) * subbuf_size;
        assert!(loc.data_offset >= start + 4);
        assert!(loc.data_offset + loc.data_len + loc.padding == start + subbuf_size);
        assert!(start + subbuf_size <= map.len() as u64);
    }
});
