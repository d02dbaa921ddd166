//! The relay user ABI seen as a trait, so the reading logic runs the same
//! against the kernel ([`crate::kernel::KernelBuffer`]) and against the
//! kernel-free model ([`crate::model::ModelBuffer`]).
//!
//! The semantics are those of `include/uapi/linux/relay.h`: sub-buffers are
//! named by a sequence number (the produced count when the writer started
//! them); the ready ones are `consumed` up to `produced - 1`, and in
//! overwrite mode only those from `produced - n_subbufs + 1` on are intact.
//!
//! A backend answers [`MappedBuffer::state`] and [`MappedBuffer::subbuf`] one of two
//! ways, which [`MappedBuffer::validates_in_place`] tells apart:
//! - from the meta area mapped after the buffer (`struct relay_meta` and its
//!   slots): no system call; an overwrite-mode copy is checked against the
//!   slot's sequence number ([`MappedBuffer::still_holds`]), so the reader
//!   releases a whole batch with one `consume`;
//! - by other means, one sub-buffer at a time (the relay-apps control files
//!   of [`crate::source::RelayAppBuffer`]): an overwrite-mode copy is
//!   checked by the lost count of the `consume` that releases it, one per
//!   sub-buffer.

use crate::Result;

/// Geometry of one relay buffer (`struct relay_buf_info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct BufInfo {
    /// Bytes per sub-buffer.
    pub subbuf_size: u64,
    /// Sub-buffers in the ring.
    pub n_subbufs: u64,
    /// The length mmap() accepts.
    pub mmap_len: u64,
    /// CPU of the buffer (0 for a global buffer).
    pub cpu: u32,
    /// One buffer shared by all CPUs.
    pub global: bool,
    /// The writer overwrites unconsumed sub-buffers (flight recorder).
    pub overwrite: bool,
    /// Bytes of the meta area mapped after the buffer (at `mmap_len`); 0
    /// when the buffer has none.
    pub meta_len: u64,
}

/// Counters of one relay buffer (`struct relay_buf_state`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct BufState {
    /// Sub-buffers completed by the writer.
    pub produced: u64,
    /// Sub-buffers released by readers.
    pub consumed: u64,
    /// Bytes written into the sub-buffer being filled: the meta area's
    /// committed count (0 where the backend has none).
    pub write_offset: u64,
    /// Writes dropped because the buffer was full (no-overwrite mode).
    pub lost_full: u64,
    /// Writes dropped because they were larger than a sub-buffer.
    pub lost_toobig: u64,
    /// Sub-buffers overwritten before they were consumed (overwrite mode).
    pub lost_overwritten: u64,
    /// The channel was closed: no more data will come.
    pub finalized: bool,
}

impl BufState {
    /// The oldest sequence number whose data may still be intact. In
    /// overwrite mode everything older than `produced - n_subbufs` was
    /// overwritten; `produced - n_subbufs` itself is in the slot the writer
    /// fills next, unless `subbuf_start()` refused that switch (a frozen
    /// flight recorder): its slot tells which. In
    /// no-overwrite mode the writer stops instead, so every unconsumed one
    /// is intact.
    #[inline]
    pub fn oldest_intact(&self, n_subbufs: u64, overwrite: bool) -> u64 {
        if overwrite {
            self.consumed.max(self.produced.saturating_sub(n_subbufs))
        } else {
            self.consumed
        }
    }
}

/// Where the data of one ready sub-buffer lies in the mapping (`struct relay_subbuf`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubbufLoc {
    /// Sequence number.
    pub seq: u64,
    /// Offset of the first data byte in the mapping.
    pub data_offset: u64,
    /// Bytes of data.
    pub data_len: u64,
    /// Unused bytes at the end of the sub-buffer.
    pub padding: u64,
    /// Writes the kernel dropped (buffer full, too big) after it started the
    /// previous sub-buffer and before it started this one: the slot's
    /// `lost_before` (meta area only; 0 elsewhere).
    pub lost_before: u64,
}

/// What the sub-buffer's slot says besides a location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubbufLookup {
    /// The sub-buffer is ready; its data is here.
    Ready(SubbufLoc),
    /// The writer overwrote it before it was read (its slot holds a later
    /// sequence number; ESTALE).
    Overwritten,
    /// Not produced yet (ENODATA).
    NotReady,
}

/// Answer of `CONSUME` (`struct relay_consume`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// How many of the released sub-buffers were overwritten while read.
    pub lost: u64,
    /// The consumed count afterwards.
    pub consumed: u64,
}

/// One relay buffer reachable through the relay ABI plus a read-only mapping.
pub trait MappedBuffer {
    /// The geometry, read once when the buffer was opened.
    fn info(&self) -> &BufInfo;
    /// The counters: from the meta area (seq_lock protocol) where the
    /// backend [validates in place](MappedBuffer::validates_in_place), else the
    /// backend's own counters.
    fn state(&mut self) -> Result<BufState>;
    /// Where the ready sub-buffer `seq` lies: from its slot in the meta area
    /// where the backend validates in place, else the backend's own record.
    fn subbuf(&mut self, seq: u64) -> Result<SubbufLookup>;
    /// Gives sub-buffers `seq .. seq + count` back to the writer
    /// (`RELAY_IOC_CONSUME`, or the backend's equivalent).
    fn release(&mut self, seq: u64, count: u64) -> Result<Released>;
    /// `RELAY_IOC_FLUSH`: make the partly filled sub-buffer ready.
    fn flush(&mut self) -> Result<()>;
    /// Makes the partly filled sub-buffer ready while the writer goes on,
    /// for a live reader; `Ok(false)` where the backend cannot (the default:
    /// relay-apps' flush is its `enabled` file, which also stops the
    /// writing, and a kernel client without `flush_buf` refuses
    /// `RELAY_IOC_FLUSH`).
    fn flush_live(&mut self) -> Result<bool> {
        Ok(false)
    }
    /// The bytes at `loc`, stable until the sub-buffer is consumed. Only for
    /// no-overwrite buffers, whose writer never touches a ready sub-buffer.
    fn data(&self, loc: &SubbufLoc) -> &[u8];
    /// Copies the bytes at `loc` into `out` (replacing its contents). For
    /// overwrite buffers, where the writer may change them while they are
    /// copied: keep the copy only if [`still_holds`](MappedBuffer::still_holds)
    /// then says so and, where the backend does not validate in place, the
    /// following `consume` reports no loss.
    fn copy_data(&self, loc: &SubbufLoc, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(self.data(loc));
    }
    /// True when [`state`](MappedBuffer::state) and [`subbuf`](MappedBuffer::subbuf)
    /// read the mapped meta area (no system call) and an overwrite-mode copy
    /// is validated by [`still_holds`](MappedBuffer::still_holds): the reader then
    /// releases everything it read in one drain with one `consume`. False
    /// (the default) for backends that validate a copy through the lost count
    /// of the `consume` releasing it, one per sub-buffer.
    fn validates_in_place(&self) -> bool {
        false
    }
    /// Overwrite mode, after [`copy_data`](MappedBuffer::copy_data): a read
    /// barrier, then whether `loc`'s slot still holds `loc.seq`, i.e. whether
    /// the copy is intact. The default, true, is for backends that validate
    /// through `consume` instead.
    fn still_holds(&self, loc: &SubbufLoc) -> bool {
        let _ = loc;
        true
    }
}
