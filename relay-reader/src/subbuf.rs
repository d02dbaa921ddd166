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

/// A sub-buffer (or read(2) chunk) a source handed out for the pull API,
/// not yet given back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Taken {
    pub(crate) cpu: u32,
    pub(crate) seq: u64,
    /// Where the data lies: in the mapping, or (`copied`) at the start of
    /// the source's own buffer.
    pub(crate) loc: crate::mapped::SubbufLoc,
    /// The data is the source's copy (overwrite mode) or read(2) chunk:
    /// counted when it was taken, nothing to give back.
    pub(crate) copied: bool,
}

/// A source that lends out sub-buffers one at a time.
pub(crate) trait Lender {
    /// The data of `taken`.
    fn lent(&self, taken: &Taken) -> &[u8];
    /// The borrower is done with `taken`: count it as received, and let
    /// the next release to the kernel include it.
    fn give_back(&mut self, taken: &Taken);
}

/// One ready sub-buffer (mmap modes) or read(2) chunk (read mode) from the
/// pull API ([`Reader::next`](crate::Reader::next)); it dereferences to its
/// data, without padding or client header.
///
/// In no-overwrite mode the data is the mapped sub-buffer itself, zero-copy:
/// the writer leaves it alone until the reader releases it, which happens
/// only after the guard is dropped. Dropping the guard gives the sub-buffer
/// back: it is counted as received ([`BufStats`]) and goes back to the kernel
/// with the reader's next release (see [`Reader::next`](crate::Reader::next)
/// for when that is). A guard that is never dropped (`mem::forget`) is never
/// given back: the next `next()` returns the same sub-buffer again.
///
/// In overwrite mode the data is a copy, validated before the guard was
/// handed out (the writer may reuse the slot at any time): it was counted
/// when it was taken.
///
/// ```no_run
/// use relay_reader::{Mode, Reader};
///
/// let mut reader = Reader::open("/sys/kernel/debug/relay_klog/cpu", Mode::Auto)?;
/// if let Some(sb) = reader.next()? {
///     println!("cpu {} sub-buffer {}: {} bytes", sb.cpu(), sb.seq(), sb.len());
///     let first_line = sb.split(|&b| b == b'\n').next();
///     println!("{:?}", first_line.map(String::from_utf8_lossy));
/// } // dropped: released with the next batch
/// # Ok::<(), relay_reader::Error>(())
/// ```
pub struct SubBufGuard<'a> {
    source: &'a mut dyn Lender,
    taken: Taken,
}

impl<'a> SubBufGuard<'a> {
    pub(crate) fn new(source: &'a mut dyn Lender, taken: Taken) -> Self {
        SubBufGuard { source, taken }
    }

    /// CPU of the buffer it came from (0 for a global buffer).
    pub fn cpu(&self) -> u32 {
        self.taken.cpu
    }

    /// Sequence number, as [`SubBuf::seq`].
    pub fn seq(&self) -> u64 {
        self.taken.seq
    }

    /// The data, without padding or client header (also through `Deref`).
    pub fn data(&self) -> &[u8] {
        self.source.lent(&self.taken)
    }

    /// The same sub-buffer as the callback API sees it, for code written
    /// for [`SubBuf`] (sinks, say).
    pub fn as_subbuf(&self) -> SubBuf<'_> {
        SubBuf {
            cpu: self.taken.cpu,
            seq: self.taken.seq,
            data: self.data(),
        }
    }
}

impl std::ops::Deref for SubBufGuard<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.data()
    }
}

impl AsRef<[u8]> for SubBufGuard<'_> {
    fn as_ref(&self) -> &[u8] {
        self.data()
    }
}

impl std::fmt::Debug for SubBufGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubBufGuard")
            .field("cpu", &self.taken.cpu)
            .field("seq", &self.taken.seq)
            .field("len", &self.data().len())
            .finish()
    }
}

impl Drop for SubBufGuard<'_> {
    fn drop(&mut self) {
        self.source.give_back(&self.taken);
    }
}
