//! Records written by `relay_klog headers=1`: each one is a 24-byte
//! `struct relay_klog_hdr` (native byte order) followed by `len` bytes.
//! Records never straddle sub-buffers, so a per-CPU recording, or a stdout
//! recording of whole sub-buffers, is a plain sequence of them.

use std::fmt;

use anyhow::{bail, Result};

/// `RELAY_KLOG_MAGIC` of `samples/relay/relay_klog.c`.
pub const MAGIC: u16 = 0x6b6c;
/// `sizeof(struct relay_klog_hdr)`.
pub const HEADER_LEN: usize = 24;

/// The context klog was called from (`enum relay_klog_ctx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// Task context (softirqs may be disabled).
    Process,
    /// Serving a softirq.
    Softirq,
    /// A hard interrupt handler.
    Hardirq,
    /// NMI.
    Nmi,
    /// A value this decoder does not know.
    Unknown(u8),
}

impl From<u8> for Context {
    fn from(v: u8) -> Self {
        match v {
            0 => Context::Process,
            1 => Context::Softirq,
            2 => Context::Hardirq,
            3 => Context::Nmi,
            other => Context::Unknown(other),
        }
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Context::Process => f.pad("process"),
            Context::Softirq => f.pad("softirq"),
            Context::Hardirq => f.pad("hardirq"),
            Context::Nmi => f.pad("nmi"),
            Context::Unknown(v) => f.pad(&format!("ctx{v}")),
        }
    }
}

/// One decoded record, borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// CPU it was written on.
    pub cpu: u32,
    /// Context of the klog call.
    pub context: Context,
    /// `ktime_get_mono_fast_ns()` when written.
    pub time_ns: u64,
    /// The bytes handed to klog.
    pub payload: &'a [u8],
}

impl Record<'_> {
    /// The payload as one line of text: UTF-8 without its final newline,
    /// or hex for binary records.
    pub fn text(&self) -> String {
        match std::str::from_utf8(self.payload) {
            Ok(s) => s.strip_suffix('\n').unwrap_or(s).to_string(),
            Err(_) => self.payload.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}

impl fmt::Display for Record<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>6}.{:09} cpu{:<3} {:<7} {}",
            self.time_ns / 1_000_000_000,
            self.time_ns % 1_000_000_000,
            self.cpu,
            self.context,
            self.text()
        )
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Splits a recording into records; `what` names it in errors.
pub fn parse<'a>(mut data: &'a [u8], what: &str) -> Result<Vec<Record<'a>>> {
    let mut records = Vec::new();
    let mut offset = 0;
    while !data.is_empty() {
        if data.len() < HEADER_LEN {
            bail!(
                "{what}: {} stray bytes at offset {offset}, too few for a record header",
                data.len()
            );
        }
        let magic = u16_at(data, 0);
        if magic != MAGIC {
            bail!(
                "{what}: no record header at offset {offset} (magic {magic:#06x}, not {MAGIC:#06x}): \
                 was relay_klog loaded with headers=1?"
            );
        }
        let len = u32_at(data, 8) as usize;
        let end = HEADER_LEN
            .checked_add(len)
            .filter(|&end| end <= data.len())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{what}: record at offset {offset} claims {len} bytes, past the end"
                )
            })?;
        records.push(Record {
            cpu: u32_at(data, 4),
            context: Context::from(data[2]),
            time_ns: u64_at(data, 16),
            payload: &data[HEADER_LEN..end],
        });
        data = &data[end..];
        offset += end;
    }
    Ok(records)
}

/// Merges per-CPU record sequences by time, keeping each one's own order
/// (a k-way merge, not a sort: equal or skewed times never reorder a CPU).
pub fn merge<'a>(streams: Vec<Vec<Record<'a>>>) -> Vec<Record<'a>> {
    let total = streams.iter().map(Vec::len).sum();
    let mut heads = vec![0usize; streams.len()];
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        let (i, _) = streams
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.get(heads[i]).map(|r| (i, r.time_ns)))
            .min_by_key(|&(i, t)| (t, i))
            .expect("records left");
        out.push(streams[i][heads[i]]);
        heads[i] += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(cpu: u32, ctx: u8, time_ns: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&MAGIC.to_ne_bytes());
        v.push(ctx);
        v.push(0);
        v.extend_from_slice(&cpu.to_ne_bytes());
        v.extend_from_slice(&(payload.len() as u32).to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(&time_ns.to_ne_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn parses_text_and_binary_records() {
        let mut data = record(1, 2, 1_500_000_000, b"hello\n");
        data.extend(record(1, 0, 1_600_000_000, &[0, 255]));
        let recs = parse(&data, "test").unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].context, Context::Hardirq);
        assert_eq!(recs[0].text(), "hello");
        assert_eq!(recs[1].text(), "00ff");
        assert_eq!(recs[0].to_string(), "     1.500000000 cpu1   hardirq hello");
    }

    #[test]
    fn refuses_headerless_and_truncated_data() {
        let err = parse(b"klog_gen cpu=0 seq=0\nklog_gen", "cpu0").unwrap_err();
        assert!(err.to_string().contains("headers=1"), "{err}");
        let mut data = record(0, 0, 1, b"abc");
        data.truncate(data.len() - 1);
        let err = parse(&data, "cpu0").unwrap_err();
        assert!(err.to_string().contains("past the end"), "{err}");
    }

    #[test]
    fn merge_keeps_each_cpu_in_order() {
        let a = record(0, 0, 10, b"a0");
        let b = record(0, 0, 5, b"a1"); // clock skew inside one CPU
        let c = record(1, 0, 7, b"b0");
        let cpu0 = [a, b].concat();
        let streams = vec![parse(&cpu0, "0").unwrap(), parse(&c, "1").unwrap()];
        let merged: Vec<String> = merge(streams).iter().map(Record::text).collect();
        assert_eq!(merged, ["b0", "a0", "a1"]);
    }
}
