//! blktrace records, in either of the kernel's two formats, and cutting a
//! byte stream at record boundaries, so that standard output only ever
//! carries whole records: read(2) on a relay file may stop in the middle of
//! one.
//!
//! Version 1 (`struct blk_io_trace`, 48 bytes, a 32-bit action) is what
//! `BLKTRACESETUP` records and what Debian's blkparse reads; version 2
//! (`struct blk_io_trace2`, 64 bytes, a 64-bit action whose category bits
//! above 15 name zone management and write-zeroes) is what `BLKTRACESETUP2`
//! records (Linux 6.19). A record's version is the low byte of its magic;
//! [`Layout`] says where each format keeps its fields, and everything here
//! reads through it: one parser for both.

use std::mem::{offset_of, size_of};

use relay_sys::blktrace::{
    blk_io_trace, blk_io_trace2, BLK_IO_TRACE2_VERSION, BLK_IO_TRACE_MAGIC, BLK_IO_TRACE_VERSION,
};

/// `BLK_IO_TRACE_MAGIC`: the upper 24 bits of the `magic` field.
pub const MAGIC: u32 = BLK_IO_TRACE_MAGIC;

/// The two record formats of the block trace ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Abi {
    /// `struct blk_io_trace`, version 7: `BLKTRACESETUP`, every kernel.
    V1,
    /// `struct blk_io_trace2`, version 8: `BLKTRACESETUP2`, Linux 6.19 on.
    V2,
}

impl Abi {
    /// The trace version in the low byte of the magic (7 or 8).
    pub const fn version(self) -> u32 {
        match self {
            Abi::V1 => BLK_IO_TRACE_VERSION,
            Abi::V2 => BLK_IO_TRACE2_VERSION,
        }
    }

    /// The whole `magic` field of this format's records.
    pub const fn magic(self) -> u32 {
        MAGIC | self.version()
    }

    /// The format whose records carry `magic`.
    pub fn from_magic(magic: u32) -> Option<Abi> {
        [Abi::V1, Abi::V2]
            .into_iter()
            .find(|abi| abi.magic() == magic)
    }

    /// Where this format keeps its fields.
    pub const fn layout(self) -> &'static Layout {
        match self {
            Abi::V1 => &Layout::V1,
            Abi::V2 => &Layout::V2,
        }
    }

    /// `v1` or `v2`.
    pub const fn name(self) -> &'static str {
        match self {
            Abi::V1 => "v1",
            Abi::V2 => "v2",
        }
    }

    /// The C structure of its records.
    pub const fn structure(self) -> &'static str {
        match self {
            Abi::V1 => "struct blk_io_trace",
            Abi::V2 => "struct blk_io_trace2",
        }
    }
}

impl std::fmt::Display for Abi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}, version {})",
            self.name(),
            self.structure(),
            self.version()
        )
    }
}

/// Byte offsets of a format's fields (native byte order, as the kernel
/// writes them and blkparse reads them) and its header length, taken from
/// the structures relay-sys generates from `blktrace_api.h`.
#[derive(Debug, PartialEq, Eq)]
pub struct Layout {
    /// `sizeof` the structure: the pdu follows.
    pub header_len: usize,
    /// `__u32 magic`.
    pub magic: usize,
    /// `__u32 sequence`.
    pub sequence: usize,
    /// `__u64 time`.
    pub time: usize,
    /// `__u64 sector`.
    pub sector: usize,
    /// `__u32 bytes`.
    pub bytes: usize,
    /// `__u32 action` (v1) or `__u64 action` (v2).
    pub action: usize,
    /// Bytes of `action`: 4 or 8.
    pub action_len: usize,
    /// `__u32 pid`.
    pub pid: usize,
    /// `__u32 device`.
    pub device: usize,
    /// `__u32 cpu`.
    pub cpu: usize,
    /// `__u16 error`.
    pub error: usize,
    /// `__u16 pdu_len`.
    pub pdu_len: usize,
}

impl Layout {
    /// `struct blk_io_trace`.
    pub const V1: Layout = Layout {
        header_len: size_of::<blk_io_trace>(),
        magic: offset_of!(blk_io_trace, magic),
        sequence: offset_of!(blk_io_trace, sequence),
        time: offset_of!(blk_io_trace, time),
        sector: offset_of!(blk_io_trace, sector),
        bytes: offset_of!(blk_io_trace, bytes),
        action: offset_of!(blk_io_trace, action),
        action_len: size_of::<u32>(),
        pid: offset_of!(blk_io_trace, pid),
        device: offset_of!(blk_io_trace, device),
        cpu: offset_of!(blk_io_trace, cpu),
        error: offset_of!(blk_io_trace, error),
        pdu_len: offset_of!(blk_io_trace, pdu_len),
    };

    /// `struct blk_io_trace2`.
    pub const V2: Layout = Layout {
        header_len: size_of::<blk_io_trace2>(),
        magic: offset_of!(blk_io_trace2, magic),
        sequence: offset_of!(blk_io_trace2, sequence),
        time: offset_of!(blk_io_trace2, time),
        sector: offset_of!(blk_io_trace2, sector),
        bytes: offset_of!(blk_io_trace2, bytes),
        action: offset_of!(blk_io_trace2, action),
        action_len: size_of::<u64>(),
        pid: offset_of!(blk_io_trace2, pid),
        device: offset_of!(blk_io_trace2, device),
        cpu: offset_of!(blk_io_trace2, cpu),
        error: offset_of!(blk_io_trace2, error),
        pdu_len: offset_of!(blk_io_trace2, pdu_len),
    };
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
            Invalid::Magic(magic) => match Abi::from_magic(magic) {
                Some(abi) => write!(
                    f,
                    "a blktrace {} record in a {} stream",
                    abi.name(),
                    match abi {
                        Abi::V1 => "v2",
                        Abi::V2 => "v1",
                    }
                ),
                None => write!(f, "magic {magic:#010x}, no blktrace record"),
            },
            Invalid::Cpu(cpu) => write!(f, "a record naming CPU {cpu}"),
            Invalid::Torn => write!(f, "a record cut short"),
        }
    }
}

pub(crate) fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

pub(crate) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

pub(crate) fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes(bytes[at..at + 2].try_into().expect("2 bytes"))
}

/// Length of the `abi` record whose header starts `header` (at least its
/// header length), pdu included; `Err` when the bytes are not a blktrace
/// record of that version, or (with `cpu`) not one of that CPU.
pub fn record_len(abi: Abi, header: &[u8], cpu: Option<u32>) -> Result<usize, Invalid> {
    let layout = abi.layout();
    let magic = u32_at(header, layout.magic);
    if magic != abi.magic() {
        return Err(Invalid::Magic(magic));
    }
    let named = u32_at(header, layout.cpu);
    if cpu.is_some_and(|cpu| cpu != named) {
        return Err(Invalid::Cpu(named));
    }
    Ok(layout.header_len + usize::from(u16_at(header, layout.pdu_len)))
}

/// Position of the first `abi` record magic in `bytes`.
fn find_magic(abi: Abi, bytes: &[u8]) -> Option<usize> {
    let magic = abi.magic().to_ne_bytes();
    bytes.windows(magic.len()).position(|w| w == magic)
}

/// One whole record of either format, borrowed: header and pdu.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    abi: Abi,
    bytes: &'a [u8],
}

impl<'a> Record<'a> {
    /// The record at the start of `bytes` and its length; `Err` when the
    /// bytes there are no blktrace record of either version, `Ok(None)`
    /// when they hold only part of one.
    pub fn parse(bytes: &'a [u8]) -> Result<Option<(Record<'a>, usize)>, Invalid> {
        if bytes.len() < 4 {
            return Ok(None);
        }
        let magic = u32_at(bytes, 0);
        let abi = Abi::from_magic(magic).ok_or(Invalid::Magic(magic))?;
        if bytes.len() < abi.layout().header_len {
            return Ok(None);
        }
        let len = record_len(abi, bytes, None)?;
        Ok(bytes.get(..len).map(|bytes| (Record { abi, bytes }, len)))
    }

    /// The format.
    pub fn abi(&self) -> Abi {
        self.abi
    }

    /// The record's bytes, header and pdu.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    fn layout(&self) -> &'static Layout {
        self.abi.layout()
    }

    /// The per-CPU event number (0 in notes).
    pub fn sequence(&self) -> u32 {
        u32_at(self.bytes, self.layout().sequence)
    }

    /// Nanoseconds (`ktime_get()`).
    pub fn time(&self) -> u64 {
        u64_at(self.bytes, self.layout().time)
    }

    /// The first 512-byte sector.
    pub fn sector(&self) -> u64 {
        u64_at(self.bytes, self.layout().sector)
    }

    /// Bytes of the I/O.
    pub fn len_bytes(&self) -> u32 {
        u32_at(self.bytes, self.layout().bytes)
    }

    /// What happened: the `__BLK_TA_*` (or, with the notify category,
    /// `__BLK_TN_*`) code in bits 0-15, `BLK_TC_*` categories from bit 16.
    pub fn action(&self) -> u64 {
        let layout = self.layout();
        match layout.action_len {
            8 => u64_at(self.bytes, layout.action),
            _ => u64::from(u32_at(self.bytes, layout.action)),
        }
    }

    /// The process.
    pub fn pid(&self) -> u32 {
        u32_at(self.bytes, self.layout().pid)
    }

    /// The device, as the kernel's `dev_t` (major in bits 20-31).
    pub fn device(&self) -> u32 {
        u32_at(self.bytes, self.layout().device)
    }

    /// The CPU whose buffer holds the record.
    pub fn cpu(&self) -> u32 {
        u32_at(self.bytes, self.layout().cpu)
    }

    /// The completion error.
    pub fn error(&self) -> u16 {
        u16_at(self.bytes, self.layout().error)
    }

    /// The payload after the header (a cgroup id first where the action
    /// has `__BLK_TA_CGROUP`).
    pub fn pdu(&self) -> &'a [u8] {
        &self.bytes[self.layout().header_len..]
    }
}

/// Splits one CPU's byte stream into runs of whole records, keeping an
/// incomplete record until the rest of it arrives. Bytes that are not a
/// record where one should start are skipped up to the next record magic
/// and counted, so one damaged record does not end a recording.
#[derive(Debug)]
pub struct Cutter {
    /// The format of every record.
    abi: Abi,
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
    /// A cutter of `abi` records, all naming `cpu` if given (a buffer's).
    pub fn new(abi: Abi, cpu: Option<u32>) -> Cutter {
        Cutter {
            abi,
            cpu,
            carry: Vec::new(),
            resync: false,
            records: 0,
            bytes: 0,
            skipped: 0,
            first_bad: None,
        }
    }

    /// The format it cuts.
    pub fn abi(&self) -> Abi {
        self.abi
    }

    /// Feeds `data`; calls `out` with every run of whole records (possibly
    /// several records, never a part of one). Errors from `out` are passed
    /// through.
    pub fn feed<E>(
        &mut self,
        mut data: &[u8],
        out: &mut dyn FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        if !self.carry.is_empty() && !self.resync && find_magic(self.abi, data) == Some(0) {
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
            let header_len = self.abi.layout().header_len;
            if self.carry.len() < header_len {
                let take = (header_len - self.carry.len()).min(data.len());
                self.carry.extend_from_slice(&data[..take]);
                data = &data[take..];
                if self.carry.len() < header_len {
                    return Ok(());
                }
            }
            match record_len(self.abi, &self.carry, self.cpu) {
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
        let header_len = self.abi.layout().header_len;
        let mut start = 0;
        let mut end = 0;
        loop {
            if self.resync {
                match find_magic(self.abi, &data[end..]) {
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
            if data.len() - end < header_len {
                break;
            }
            match record_len(self.abi, &data[end..], self.cpu) {
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

/// Trace categories by blktrace's names (`BLK_TC_*`), for `-a`; those from
/// bit 16 on exist in the v2 ABI only (named as the kernel's sysfs
/// `act_mask` and blkparse name them).
pub const CATEGORIES: &[(&str, u64)] = &[
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
    ("zone-append", 1 << 16),
    ("zone-reset", 1 << 17),
    ("zone-reset-all", 1 << 18),
    ("zone-finish", 1 << 19),
    ("zone-open", 1 << 20),
    ("zone-close", 1 << 21),
    ("write-zeroes", 1 << 22),
];

/// The categories a v1 trace can filter on and record: bits 0-15.
pub const V1_CATEGORIES: u64 = 0xffff;

/// The category bit named `name` (case-insensitive).
pub fn category(name: &str) -> Result<u64, String> {
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
pub(crate) mod tests {
    use super::*;

    /// A record as the kernel writes it, in `abi`, naming `cpu`, with a pdu.
    pub(crate) fn record_on(abi: Abi, seq: u32, cpu: u32, action: u64, pdu: &[u8]) -> Vec<u8> {
        let l = abi.layout();
        let mut r = vec![0u8; l.header_len];
        r[l.magic..l.magic + 4].copy_from_slice(&abi.magic().to_ne_bytes());
        r[l.sequence..l.sequence + 4].copy_from_slice(&seq.to_ne_bytes());
        r[l.cpu..l.cpu + 4].copy_from_slice(&cpu.to_ne_bytes());
        match l.action_len {
            8 => r[l.action..l.action + 8].copy_from_slice(&action.to_ne_bytes()),
            _ => r[l.action..l.action + 4].copy_from_slice(&(action as u32).to_ne_bytes()),
        }
        r[l.pdu_len..l.pdu_len + 2].copy_from_slice(&(pdu.len() as u16).to_ne_bytes());
        r.extend_from_slice(pdu);
        r
    }

    fn record(abi: Abi, seq: u32, pdu: &[u8]) -> Vec<u8> {
        record_on(abi, seq, 0, 0, pdu)
    }

    fn stream(abi: Abi) -> Vec<u8> {
        let mut s = Vec::new();
        for i in 0..20u32 {
            let pdu = vec![i as u8; (i as usize * 7) % 23];
            s.extend(record(abi, i, &pdu));
        }
        s
    }

    /// Feeds `s` in chunks of `chunk` bytes; returns the runs passed on.
    fn cut(abi: Abi, s: &[u8], chunk: usize) -> (Vec<Vec<u8>>, Cutter) {
        let mut cutter = Cutter::new(abi, None);
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

    const BOTH: [Abi; 2] = [Abi::V1, Abi::V2];

    #[test]
    fn every_chunking_gives_whole_records_and_the_same_bytes() {
        for abi in BOTH {
            let s = stream(abi);
            for chunk in [1, 2, 5, 47, 48, 49, 63, 64, 65, 100, 1000, s.len()] {
                let (runs, cutter) = cut(abi, &s, chunk);
                assert_eq!(runs.concat(), s, "{abi} chunk {chunk}");
                assert_eq!(cutter.records, 20, "{abi} chunk {chunk}");
                assert_eq!(cutter.bytes, s.len() as u64);
                assert_eq!(cutter.pending(), 0);
                for run in &runs {
                    // Each run parses as whole records by itself.
                    let mut at = 0;
                    while at < run.len() {
                        at += record_len(abi, &run[at..], None).unwrap();
                    }
                    assert_eq!(
                        at,
                        run.len(),
                        "{abi} chunk {chunk}: a run ends inside a record"
                    );
                }
            }
        }
    }

    #[test]
    fn an_incomplete_tail_is_held_back() {
        for abi in BOTH {
            let s = stream(abi);
            let (runs, cutter) = cut(abi, &s[..s.len() - 3], 64);
            assert_eq!(cutter.records, 19);
            assert!(cutter.pending() > 0);
            assert_eq!(runs.concat().len() + cutter.pending(), s.len() - 3);
        }
    }

    #[test]
    fn garbage_is_skipped_counted_and_located() {
        for abi in BOTH {
            let header_len = abi.layout().header_len;
            let good = stream(abi);
            let mut s = record(abi, 1, b"");
            s.extend([0xaa; 50]);
            s.extend(&good);
            s.extend([0x00; 7]);
            s.extend(record(abi, 2, b"pdu!"));
            for chunk in [1, 3, 10, 48, 49, 64, 97, s.len()] {
                let (runs, cutter) = cut(abi, &s, chunk);
                assert_eq!(cutter.records, 22, "{abi} chunk {chunk}");
                assert_eq!(cutter.skipped, 57, "{abi} chunk {chunk}");
                assert_eq!(cutter.pending(), 0, "{abi} chunk {chunk}");
                assert_eq!(
                    cutter.first_bad,
                    Some(BadRecord {
                        offset: header_len as u64,
                        found: Invalid::Magic(0xaaaa_aaaa)
                    }),
                    "{abi} chunk {chunk}"
                );
                let mut expect = record(abi, 1, b"");
                expect.extend(&good);
                expect.extend(record(abi, 2, b"pdu!"));
                assert_eq!(runs.concat(), expect, "{abi} chunk {chunk}");
            }
        }
    }

    /// A stream of one version does not take records of the other: a v1
    /// record in a v2 stream is bytes to skip, and says what it was.
    #[test]
    fn records_of_the_other_version_are_no_records() {
        let mut s = record(Abi::V2, 1, b"");
        s.extend(record(Abi::V1, 2, b""));
        s.extend(record(Abi::V2, 3, b""));
        let (runs, cutter) = cut(Abi::V2, &s, s.len());
        assert_eq!(cutter.records, 2);
        assert_eq!(cutter.skipped, 48);
        let bad = cutter.first_bad.unwrap();
        assert_eq!(
            bad.to_string(),
            "byte 64: a blktrace v1 record in a v2 stream"
        );
        assert_eq!(runs.concat().len(), 128);
    }

    /// A record cut short by a skipped sub-buffer is dropped, not glued to
    /// the next sub-buffer's first record; records of another CPU are no
    /// records of this buffer.
    #[test]
    fn torn_and_foreign_records_are_dropped() {
        for abi in BOTH {
            let one = record(abi, 1, b"0123456789abcdef");
            let two = record(abi, 2, b"");
            let mut cutter = Cutter::new(abi, Some(0));
            let mut runs = Vec::new();
            let mut push = |run: &[u8]| -> Result<(), ()> {
                runs.push(run.to_vec());
                Ok(())
            };
            cutter.feed(&one[..30], &mut push).unwrap();
            cutter.feed(&two, &mut push).unwrap();
            let foreign = record_on(abi, 3, 7, 0, b"");
            cutter.feed(&foreign, &mut push).unwrap();
            cutter.feed(&two, &mut push).unwrap();
            assert_eq!(runs.concat(), [two.clone(), two].concat());
            assert_eq!(cutter.records, 2);
            assert_eq!(cutter.skipped, 30 + abi.layout().header_len as u64);
            assert_eq!(cutter.first_bad.unwrap().found, Invalid::Torn);
        }
    }

    #[test]
    fn records_parse_in_either_version() {
        for abi in BOTH {
            let action = (1u64 << 33) | 7;
            let mut bytes = record_on(abi, 9, 1, action, b"xy");
            bytes.extend(b"next");
            let (r, len) = Record::parse(&bytes).unwrap().unwrap();
            assert_eq!(len, abi.layout().header_len + 2);
            assert_eq!(
                (r.abi(), r.sequence(), r.cpu(), r.pdu()),
                (abi, 9, 1, &b"xy"[..])
            );
            // v1 has 32 bits of action.
            let expect = if abi == Abi::V1 { 7 } else { action };
            assert_eq!(r.action(), expect);
            assert_eq!(Record::parse(&bytes[..len - 1]).unwrap(), None);
            assert_eq!(Record::parse(b"\0\0\0\0"), Err(Invalid::Magic(0)));
        }
    }

    /// The values the parser was written against (x86-64 and every LP64
    /// target), as `blktrace_api.h` lays the structures out.
    #[test]
    fn layout() {
        let v1 = Abi::V1.layout();
        assert_eq!(v1.header_len, 48);
        assert_eq!(Abi::V1.magic(), 0x6561_7407);
        assert_eq!(
            (
                v1.magic,
                v1.sequence,
                v1.time,
                v1.sector,
                v1.bytes,
                v1.action
            ),
            (0, 4, 8, 16, 24, 28)
        );
        assert_eq!(
            (v1.pid, v1.device, v1.cpu, v1.error, v1.pdu_len),
            (32, 36, 40, 44, 46)
        );
        let v2 = Abi::V2.layout();
        assert_eq!(v2.header_len, 64);
        assert_eq!(Abi::V2.magic(), 0x6561_7408);
        assert_eq!(
            (v2.magic, v2.sequence, v2.time, v2.sector, v2.bytes, v2.pid),
            (0, 4, 8, 16, 24, 28)
        );
        assert_eq!(
            (
                v2.action,
                v2.action_len,
                v2.device,
                v2.cpu,
                v2.error,
                v2.pdu_len
            ),
            (32, 8, 40, 44, 48, 50)
        );
    }

    #[test]
    fn categories() {
        assert_eq!(category("QUEUE"), Ok(1 << 4));
        assert_eq!(category("complete"), Ok(1 << 7));
        assert_eq!(category("zone-reset"), Ok(1 << 17));
        assert_eq!(category("write-zeroes"), Ok(1 << 22));
        assert!(category("bogus").unwrap_err().contains("known: read"));
    }
}
