//! What the reader hands to callbacks, and what it counts.

/// The data of one sub-buffer (mmap modes) or one read(2) chunk (read mode),
/// borrowed from the mapping or the read buffer: copy what you keep.
#[derive(Debug, Clone, Copy)]
pub struct SubBuf<'a> {
    /// CPU of the buffer it came from (0 for a global buffer).
    pub cpu: u32,
    /// Sequence number: the kernel's produced count when the sub-buffer was
    /// started (mmap modes), or the chunk number (read mode).
    pub seq: u64,
    /// The data, without padding or client header.
    pub data: &'a [u8],
}

/// Per-buffer counters, so that `received + lost == produced` can be checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct BufStats {
    /// CPU of the buffer.
    pub cpu: u32,
    /// Sub-buffers (or read chunks) delivered to the callback.
    pub subbufs: u64,
    /// Bytes delivered to the callback.
    pub bytes: u64,
    /// Sub-buffers the writer overwrote before they could be delivered
    /// (overwrite mode): skipped, found overwritten by their slot, or lapped
    /// while being copied.
    pub lost_subbufs: u64,
    /// Writes the kernel dropped (buffer full, too big) right before the
    /// delivered sub-buffers: the sum of their slots' `lost_before`. Counted
    /// where the buffer has a meta area, 0 otherwise.
    pub drops_before: u64,
    /// Delivered sub-buffers that dropped writes came right before
    /// (`lost_before` > 0): the places where the delivered data has gaps.
    pub subbufs_after_drops: u64,
    /// Largest number of ready sub-buffers seen waiting at once.
    pub max_backlog: u64,
    /// The kernel's counters as of the last drain (produced, consumed,
    /// drops by cause), where the buffer has a meta area: the mmap mode, and
    /// read(2) on a kernel with the series or a `relay_app` channel.
    pub kernel: Option<crate::mapped::BufState>,
}

impl BufStats {
    /// Sub-buffers accounted for: received plus lost. Equals the kernel's
    /// produced count once a buffer is flushed and drained.
    pub fn accounted(&self) -> u64 {
        self.subbufs + self.lost_subbufs
    }
}
