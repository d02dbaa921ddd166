//! The events of the readtest example (`samples/relay/relay_readtest.c`):
//! `struct relay_readtest_event` (`u32 cpu`, `u32 size`, `u64 seq`, native
//! byte order) followed by `size - 16` payload bytes, each the low byte of
//! `seq`. One parser for the example program and the tests that check the
//! same events.
#![deny(missing_docs)]

/// Bytes of `struct relay_readtest_event`.
pub const HEADER_LEN: usize = 16;

/// The header of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// The CPU that wrote it.
    pub cpu: u32,
    /// Its size in bytes, header included.
    pub size: u32,
    /// Its sequence number, from 0 per CPU and test.
    pub seq: u64,
}

impl Event {
    /// The header at the start of `bytes`; `None` when fewer than
    /// [`HEADER_LEN`] bytes are given.
    pub fn parse(bytes: &[u8]) -> Option<Event> {
        let header = bytes.get(..HEADER_LEN)?;
        let u32_at = |at: usize| u32::from_ne_bytes(header[at..at + 4].try_into().expect("4"));
        Some(Event {
            cpu: u32_at(0),
            size: u32_at(4),
            seq: u64::from_ne_bytes(header[8..16].try_into().expect("8")),
        })
    }

    /// True if `bytes` (the event, header first) hold the whole event and
    /// every payload byte is the low byte of its sequence number: not torn,
    /// not overwritten while it was read.
    pub fn payload_intact(&self, bytes: &[u8]) -> bool {
        let size = self.size as usize;
        size >= HEADER_LEN
            && bytes
                .get(HEADER_LEN..size)
                .is_some_and(|p| p.iter().all(|&b| b == self.seq as u8))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(cpu: u32, size: u32, seq: u64) -> Vec<u8> {
        let mut e = Vec::new();
        e.extend(cpu.to_ne_bytes());
        e.extend(size.to_ne_bytes());
        e.extend(seq.to_ne_bytes());
        e.resize(size as usize, seq as u8);
        e
    }

    #[test]
    fn parses_the_header_and_checks_the_payload() {
        let mut e = event(3, 32, 0x1234);
        let ev = Event::parse(&e).unwrap();
        assert_eq!(
            ev,
            Event {
                cpu: 3,
                size: 32,
                seq: 0x1234
            }
        );
        assert!(ev.payload_intact(&e));
        assert!(!ev.payload_intact(&e[..31]), "a short event is not intact");
        e[20] ^= 1;
        assert!(!ev.payload_intact(&e), "a changed payload byte is torn");
        assert_eq!(Event::parse(&e[..15]), None);
        let tiny = Event { size: 8, ..ev };
        assert!(!tiny.payload_intact(&e), "a size below the header's");
    }
}
