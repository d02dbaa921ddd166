//! The relay-apps sub-buffer parser on arbitrary buffer contents and
//! geometry, with 4- and 8-byte padding words and their detection: errors
//! for corrupt padding words, never a panic, and a data range that always
//! lies inside its sub-buffer.
#![no_main]

use relay_reader::source::{relay_app_locate, PaddingEvidence};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() < 10 {
        return;
    }
    let subbuf_size = u64::from(u16::from_le_bytes([data[0], data[1]]));
    let n_subbufs = u64::from(data[2]);
    let seq = u64::from(u32::from_le_bytes([data[3], data[4], data[5], data[6]]));
    let map = &data[7..];
    for word in [4, 8] {
        if let Ok(loc) = relay_app_locate(map, seq, subbuf_size, n_subbufs, word) {
            let start = (seq % n_subbufs) * subbuf_size;
            assert!(loc.data_offset == start + word);
            assert!(loc.data_offset + loc.data_len + loc.padding == start + subbuf_size);
            assert!(start + subbuf_size <= map.len() as u64);
        }
    }
    // Detection over the same bytes: a size it leaves reads every
    // sub-buffer it looked at.
    let evidence = PaddingEvidence::scan(map, subbuf_size, n_subbufs, 0);
    assert!(evidence.subbufs <= n_subbufs);
    if let Ok(Some(word)) = evidence.verdict(subbuf_size) {
        let word = word.bytes().expect("a decided size");
        for i in 0..evidence.subbufs {
            assert!(relay_app_locate(map, i, subbuf_size, n_subbufs, word).is_ok());
        }
    }
});
