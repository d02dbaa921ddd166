//! What a recording reports: every buffer's counters, the mode and the
//! scheduling it ran under, as text or JSON.

use std::io::{self, Write};
use std::path::PathBuf;

use relay_reader::BufStats;
use serde::Serialize;

/// The counters of a recording, serializable (`serde_json::to_string`) and
/// printable ([`Summary::write_text`]).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The channel's base path (or its one file).
    pub channel: PathBuf,
    /// The mode it was read in (`mmap`, `relay-app`, `read`).
    pub mode: String,
    /// relay-app mode: bytes of the padding words, once known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub padding_word: Option<u64>,
    /// How it was read: `per-buffer` (a thread per buffer, pinned to the
    /// buffer's CPU where the channel is per-CPU) or `one` (one thread).
    pub threads: String,
    /// The scheduling the reading threads ran under (see
    /// [`crate::Scheduling`]).
    pub scheduling: String,
    /// Seconds from the start of the recording.
    pub seconds: f64,
    /// One entry per buffer, in the order they were opened.
    pub cpus: Vec<CpuSummary>,
}

/// One buffer's counters (see [`BufStats`]); the kernel's own counters are
/// `None` where the mode cannot see them.
#[derive(Debug, Clone, Serialize)]
pub struct CpuSummary {
    /// CPU of the buffer (0 for a global buffer).
    pub cpu: u32,
    /// Sub-buffers (read(2) chunks in read mode) recorded.
    pub subbufs: u64,
    /// Bytes recorded.
    pub bytes: u64,
    /// Largest number of ready sub-buffers seen waiting at once.
    pub max_backlog: u64,
    /// Sub-buffers the writer overwrote before they were read.
    pub lost_subbufs: u64,
    /// Sub-buffers the kernel produced.
    pub produced: Option<u64>,
    /// Writes the kernel dropped because the buffer was full.
    pub lost_full: Option<u64>,
    /// Writes the kernel dropped because they exceeded a sub-buffer.
    pub lost_toobig: Option<u64>,
    /// Sub-buffers the kernel counted as overwritten.
    pub lost_overwritten: Option<u64>,
}

impl From<&BufStats> for CpuSummary {
    fn from(s: &BufStats) -> Self {
        CpuSummary {
            cpu: s.cpu,
            subbufs: s.subbufs,
            bytes: s.bytes,
            max_backlog: s.max_backlog,
            lost_subbufs: s.lost_subbufs,
            produced: s.kernel.map(|k| k.produced),
            lost_full: s.kernel.map(|k| k.lost_full),
            lost_toobig: s.kernel.map(|k| k.lost_toobig),
            lost_overwritten: s.kernel.map(|k| k.lost_overwritten),
        }
    }
}

impl Summary {
    /// Bytes recorded from every buffer.
    pub fn bytes(&self) -> u64 {
        self.cpus.iter().map(|c| c.bytes).sum()
    }

    /// Sub-buffers (or read chunks) recorded from every buffer.
    pub fn subbufs(&self) -> u64 {
        self.cpus.iter().map(|c| c.subbufs).sum()
    }

    /// Sub-buffers lost to overwriting, every buffer.
    pub fn lost_subbufs(&self) -> u64 {
        self.cpus.iter().map(|c| c.lost_subbufs).sum()
    }

    /// Writes the kernel dropped because a buffer was full, where the mode
    /// sees the kernel's counters (0 otherwise).
    pub fn lost_full(&self) -> u64 {
        self.cpus.iter().filter_map(|c| c.lost_full).sum()
    }

    /// Pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a Summary always serializes")
    }

    /// The summary as a table, one line per buffer, headed by `program`'s
    /// name:
    ///
    /// ```text
    /// relay-reader: /sys/kernel/debug/relay_klog/cpu (mmap mode, 2.0 s)
    ///  cpu   subbufs        bytes  backlog  produced   lost_sb  lost_full  lost_big  overwritten
    ///    0        12       786432        1        12         0          0         0            0
    /// total: 786432 bytes, 0 sub-buffers lost to overwriting, 0 writes dropped by the kernel
    /// ```
    pub fn write_text(&self, program: &str, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "{program}: {} ({} mode{}, {:.1} s)",
            self.channel.display(),
            self.mode,
            self.padding_word
                .map_or_else(String::new, |n| format!(", {n}-byte padding words")),
            self.seconds
        )?;
        writeln!(
            out,
            "{:>4} {:>9} {:>12} {:>8} {:>9} {:>9} {:>10} {:>9} {:>12}",
            "cpu",
            "subbufs",
            "bytes",
            "backlog",
            "produced",
            "lost_sb",
            "lost_full",
            "lost_big",
            "overwritten"
        )?;
        for c in &self.cpus {
            writeln!(
                out,
                "{:>4} {:>9} {:>12} {:>8} {:>9} {:>9} {:>10} {:>9} {:>12}",
                c.cpu,
                c.subbufs,
                c.bytes,
                c.max_backlog,
                or_dash(c.produced),
                c.lost_subbufs,
                or_dash(c.lost_full),
                or_dash(c.lost_toobig),
                or_dash(c.lost_overwritten)
            )?;
        }
        let dropped: u64 = self
            .cpus
            .iter()
            .map(|c| c.lost_full.unwrap_or(0) + c.lost_toobig.unwrap_or(0))
            .sum();
        let counted = self.cpus.iter().any(|c| c.lost_full.is_some());
        writeln!(
            out,
            "total: {} bytes, {} sub-buffers lost to overwriting, {}",
            self.bytes(),
            self.lost_subbufs(),
            if counted {
                format!("{dropped} writes dropped by the kernel")
            } else {
                "kernel drops not visible in this mode".into()
            }
        )
    }
}

/// A counter the mode may not see, `-` where it does not.
pub fn or_dash(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}
