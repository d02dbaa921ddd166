//! blktrace records (`struct blk_io_trace` followed by `pdu_len` bytes) and
//! cutting a byte stream at record boundaries, so that standard output only
//! ever carries whole records: read(2) on a relay file may stop in the
//! middle of one.

use relay_sys::blktrace::{blk_io_trace, BLK_IO_TRACE_MAGIC, BLK_IO_TRACE_VERSION};

/// `sizeof(struct blk_io_trace)`.
pub const HEADER_LEN: usize = size_of::<blk_io_trace>();
/// `BLK_IO_TRACE_MAGIC`: the upper 24 bits of the `magic` field.
pub const MAGIC: u32 = BLK_IO_TRACE_MAGIC;
/// `BLK_IO_TRACE_VERSION`: the low byte of the `magic` field.
pub const VERSION: u32 = BLK_IO_TRACE_VERSION;

/// Byte offsets of the fields read here (native byte order, as the kernel
/// writes them and blkparse reads them).
pub mod offset {
    use relay_sys::blktrace::blk_io_trace;
    use std::mem::offset_of;

    /// `__u32 magic`.
    pub const MAGIC: usize = offset_of!(blk_io_trace, magic);
    /// `__u32 cpu`.
    pub const CPU: usize = offset_of!(blk_io_trace, cpu);
    /// `__u16 pdu_len`.
    pub const PDU_LEN: usize = offset_of!(blk_io_trace, pdu_len);
}

/// A byte sequence that is not a blktrace record where one should start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadRecord {
    /// Offset in the stream (bytes since the start of the recording).
    pub offset: u64,
    /// What was found there.
    pub found: Invalid,
}

/// Why bytes are not a record of this buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// The `magic` field is not blktrace's (of this version).
    Magic(u32),
    /// A record of another CPU: the kernel writes each record into the
    /// buffer of the CPU it names.
    Cpu(u32),
    /// A record whose beginning was lost (read(2) skipped the rest of its
    /// sub-buffer): the next sub-buffer started instead.
    Torn,
}

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "byte {}: ", self.offset)?;
        match self.found {
            Invalid::Magic(magic) => {
                write!(f, "magic {magic:#010x}, expected {:#010x}", MAGIC | VERSION)
            }
            Invalid::Cpu(cpu) => write!(f, "a record naming CPU {cpu}"),
            Invalid::Torn => write!(f, "a record cut short"),
        }
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes(bytes[at..at + 2].try_into().expect("2 bytes"))
}

/// Length of the record whose header starts `header` (at least
/// [`HEADER_LEN`] bytes), pdu included; `Err` when the bytes are not a
/// blktrace record of this version, or (with `cpu`) not one of that CPU.
pub fn record_len(header: &[u8], cpu: Option<u32>) -> Result<usize, Invalid> {
    let magic = u32_at(header, offset::MAGIC);
    if magic != MAGIC | VERSION {
        return Err(Invalid::Magic(magic));
    }
    let named = u32_at(header, offset::CPU);
    if cpu.is_some_and(|cpu| cpu != named) {
        return Err(Invalid::Cpu(named));
    }
    Ok(HEADER_LEN + usize::from(u16_at(header, offset::PDU_LEN)))
}

/// Position of the first record magic in `bytes`.
fn find_magic(bytes: &[u8]) -> Option<usize> {
    let magic = (MAGIC | VERSION).to_ne_bytes();
    bytes.windows(magic.len()).position(|w| w == magic)
}

/// Splits one CPU's byte stream into runs of whole records, keeping an
/// incomplete record until the rest of it arrives. Bytes that are not a
/// record where one should start are skipped up to the next record magic
/// and counted, so one damaged record does not end a recording.
#[derive(Debug, Default)]
pub struct Cutter {
    /// The buffer's CPU, which every record names.
    cpu: Option<u32>,
    carry: Vec<u8>,
    /// Looking for the next record magic after bytes that were no record.
    resync: bool,
    /// Whole records passed on.
    pub records: u64,
    /// Bytes of the whole records passed on.
    pub bytes: u64,
    /// Bytes skipped because they were no record.
    pub skipped: u64,
    /// The first place where a record was expected and none was found.
    pub first_bad: Option<BadRecord>,
}

impl Cutter {
    /// A cutter for the buffer of `cpu`.
    pub fn for_cpu(cpu: u32) -> Cutter {
        Cutter {
            cpu: Some(cpu),
            ..Cutter::default()
        }
    }

    /// Feeds `data`; calls `out` with every run of whole records (possibly
    /// several records, never a part of one). Errors from `out` are passed
    /// through.
    pub fn feed<E>(
        &mut self,
        mut data: &[u8],
        out: &mut dyn FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        if !self.carry.is_empty() && !self.resync && find_magic(data) == Some(0) {
            // The rest of the pending record should follow; a new record
            // instead means read(2) skipped the rest of its sub-buffer
            // (relay does so when the buffer is full): drop the torn record.
            self.first_bad.get_or_insert(BadRecord {
                offset: self.bytes + self.skipped,
                found: Invalid::Torn,
            });
            self.skipped += self.carry.len() as u64;
            self.carry.clear();
        }
        if !self.carry.is_empty() && !self.resync {
            // Complete the header first, then the record.
            if self.carry.len() < HEADER_LEN {
                let take = (HEADER_LEN - self.carry.len()).min(data.len());
                self.carry.extend_from_slice(&data[..take]);
                data = &data[take..];
                if self.carry.len() < HEADER_LEN {
                    return Ok(());
                }
            }
            match record_len(&self.carry, self.cpu) {
                Ok(len) => {
                    let take = (len - self.carry.len()).min(data.len());
                    self.carry.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.carry.len() < len {
                        return Ok(());
                    }
                    out(&self.carry)?;
                    self.records += 1;
                    self.bytes += len as u64;
                    self.carry.clear();
                }
                Err(found) => {
                    self.bad(found);
                    // Search again from the carried bytes' second byte.
                    self.carry.remove(0);
                    self.skipped += 1;
                }
            }
        }
        if self.resync && !self.carry.is_empty() {
            // Rare: join the held-back bytes with the new ones and search.
            let mut joined = std::mem::take(&mut self.carry);
            joined.extend_from_slice(data);
            return self.scan(&joined, out);
        }
        self.scan(data, out)
    }

    /// Passes on the whole records of `data` (which starts at a record
    /// boundary unless resynchronising) and keeps the rest.
    fn scan<E>(
        &mut self,
        data: &[u8],
        out: &mut dyn FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut start = 0;
        let mut end = 0;
        loop {
            if self.resync {
                match find_magic(&data[end..]) {
                    Some(at) => {
                        self.skipped += at as u64;
                        end += at;
                        start = end;
                        self.resync = false;
                    }
                    None => {
                        // Keep what could be the start of a magic.
                        let rest = data.len() - end;
                        let keep = rest.min(3);
                        self.skipped += (rest - keep) as u64;
                        self.carry.extend_from_slice(&data[data.len() - keep..]);
                        return Ok(());
                    }
                }
            }
            if data.len() - end < HEADER_LEN {
                break;
            }
            match record_len(&data[end..], self.cpu) {
                Ok(len) if data.len() - end >= len => {
                    end += len;
                    self.records += 1;
                    self.bytes += len as u64;
                }
                Ok(_) => break,
                Err(found) => {
                    if end > start {
                        out(&data[start..end])?;
                    }
                    self.bad(found);
                    end += 1;
                    self.skipped += 1;
                    start = end;
                }
            }
        }
        if end > start {
            out(&data[start..end])?;
        }
        self.carry.extend_from_slice(&data[end..]);
        Ok(())
    }

    /// Notes no record at the current position and starts searching.
    fn bad(&mut self, found: Invalid) {
        self.first_bad.get_or_insert(BadRecord {
            offset: self.bytes + self.skipped,
            found,
        });
        self.resync = true;
    }

    /// Bytes held back: an incomplete record still waiting for the rest.
    pub fn pending(&self) -> usize {
        self.carry.len()
    }
}

/// Trace categories by blktrace's names (`BLK_TC_*`), for `-a`.
pub const CATEGORIES: &[(&str, u16)] = &[
    ("read", 1 << 0),
    ("write", 1 << 1),
    ("barrier", 1 << 2),
    ("flush", 1 << 2),
    ("sync", 1 << 3),
    ("queue", 1 << 4),
    ("requeue", 1 << 5),
    ("issue", 1 << 6),
    ("complete", 1 << 7),
    ("fs", 1 << 8),
    ("pc", 1 << 9),
    ("notify", 1 << 10),
    ("ahead", 1 << 11),
    ("meta", 1 << 12),
    ("discard", 1 << 13),
    ("drv_data", 1 << 14),
    ("fua", 1 << 15),
];

/// The category bit named `name` (case-insensitive).
pub fn category(name: &str) -> Result<u16, String> {
    CATEGORIES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name.trim()))
        .map(|&(_, bit)| bit)
        .ok_or_else(|| {
            let names: Vec<&str> = CATEGORIES.iter().map(|(n, _)| *n).collect();
            format!(
                "unknown action category {name:?}; known: {}",
                names.join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as the kernel writes it, with a pdu of `pdu` bytes.
    fn record(seq: u32, pdu: &[u8]) -> Vec<u8> {
        let mut r = vec![0u8; HEADER_LEN];
        r[..4].copy_from_slice(&(MAGIC | VERSION).to_ne_bytes());
        r[4..8].copy_from_slice(&seq.to_ne_bytes());
        r[offset::PDU_LEN..offset::PDU_LEN + 2].copy_from_slice(&(pdu.len() as u16).to_ne_bytes());
        r.extend_from_slice(pdu);
        r
    }

    fn stream() -> Vec<u8> {
        let mut s = Vec::new();
        for i in 0..20u32 {
            let pdu = vec![i as u8; (i as usize * 7) % 23];
            s.extend(record(i, &pdu));
        }
        s
    }

    /// Feeds `s` in chunks of `chunk` bytes; returns the runs passed on.
    fn cut(s: &[u8], chunk: usize) -> (Vec<Vec<u8>>, Cutter) {
        let mut cutter = Cutter::default();
        let mut runs = Vec::new();
        for piece in s.chunks(chunk) {
            cutter
                .feed::<()>(piece, &mut |run| {
                    runs.push(run.to_vec());
                    Ok(())
                })
                .unwrap();
        }
        (runs, cutter)
    }

    #[test]
    fn every_chunking_gives_whole_records_and_the_same_bytes() {
        let s = stream();
        for chunk in [1, 2, 5, 47, 48, 49, 64, 100, 1000, s.len()] {
            let (runs, cutter) = cut(&s, chunk);
            assert_eq!(runs.concat(), s, "chunk {chunk}");
            assert_eq!(cutter.records, 20, "chunk {chunk}");
            assert_eq!(cutter.bytes, s.len() as u64);
            assert_eq!(cutter.pending(), 0);
            for run in &runs {
                // Each run parses as whole records by itself.
                let mut at = 0;
                while at < run.len() {
                    at += record_len(&run[at..], None).unwrap();
                }
                assert_eq!(at, run.len(), "chunk {chunk}: a run ends inside a record");
            }
        }
    }

    #[test]
    fn an_incomplete_tail_is_held_back() {
        let s = stream();
        let (runs, cutter) = cut(&s[..s.len() - 3], 64);
        assert_eq!(cutter.records, 19);
        assert!(cutter.pending() > 0);
        assert_eq!(runs.concat().len() + cutter.pending(), s.len() - 3);
    }

    #[test]
    fn garbage_is_skipped_counted_and_located() {
        let good = stream();
        let mut s = record(1, b"");
        s.extend([0xaa; 50]);
        s.extend(&good);
        s.extend([0x00; 7]);
        s.extend(record(2, b"pdu!"));
        for chunk in [1, 3, 10, 48, 49, 97, s.len()] {
            let (runs, cutter) = cut(&s, chunk);
            assert_eq!(cutter.records, 22, "chunk {chunk}");
            assert_eq!(cutter.skipped, 57, "chunk {chunk}");
            assert_eq!(cutter.pending(), 0, "chunk {chunk}");
            assert_eq!(
                cutter.first_bad,
                Some(BadRecord {
                    offset: HEADER_LEN as u64,
                    found: Invalid::Magic(0xaaaa_aaaa)
                }),
                "chunk {chunk}"
            );
            let mut expect = record(1, b"");
            expect.extend(&good);
            expect.extend(record(2, b"pdu!"));
            assert_eq!(runs.concat(), expect, "chunk {chunk}");
        }
    }

    /// A record cut short by a skipped sub-buffer is dropped, not glued to
    /// the next sub-buffer's first record; records of another CPU are no
    /// records of this buffer.
    #[test]
    fn torn_and_foreign_records_are_dropped() {
        let one = record(1, b"0123456789abcdef");
        let two = record(2, b"");
        let mut cutter = Cutter::for_cpu(0);
        let mut runs = Vec::new();
        let mut push = |run: &[u8]| -> Result<(), ()> {
            runs.push(run.to_vec());
            Ok(())
        };
        cutter.feed(&one[..30], &mut push).unwrap();
        cutter.feed(&two, &mut push).unwrap();
        let mut foreign = record(3, b"");
        foreign[offset::CPU..offset::CPU + 4].copy_from_slice(&7u32.to_ne_bytes());
        cutter.feed(&foreign, &mut push).unwrap();
        cutter.feed(&two, &mut push).unwrap();
        assert_eq!(runs.concat(), [two.clone(), two].concat());
        assert_eq!(cutter.records, 2);
        assert_eq!(cutter.skipped, 30 + HEADER_LEN as u64);
        assert_eq!(cutter.first_bad.unwrap().found, Invalid::Torn);
    }

    /// The values the parser was written against (x86-64 and every LP64 target).
    #[test]
    fn layout() {
        assert_eq!(HEADER_LEN, 48);
        assert_eq!(MAGIC | VERSION, 0x6561_7407);
        assert_eq!((offset::MAGIC, offset::CPU, offset::PDU_LEN), (0, 40, 46));
    }

    #[test]
    fn categories() {
        assert_eq!(category("QUEUE"), Ok(1 << 4));
        assert_eq!(category("complete"), Ok(1 << 7));
        assert!(category("bogus").unwrap_err().contains("known: read"));
    }
}
