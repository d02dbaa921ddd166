//! Reading through the relay ABI: zero-copy for no-overwrite buffers,
//! copy-then-validate for overwrite buffers.
//!
//! Where the backend reads the meta area ([`MappedBuffer::validates_in_place`]),
//! a drain reads the counters and every slot from memory, validates an
//! overwrite-mode copy by its slot ([`MappedBuffer::still_holds`]) and releases
//! everything it went through with one `consume` at the end: one system call
//! per drain. Otherwise (the relay-apps control files) it releases each
//! sub-buffer on its own, since the lost count of that `consume` is what validates an
//! overwrite-mode copy.

use crate::mapped::{BufState, MappedBuffer, SubbufLoc, SubbufLookup};
use crate::subbuf::{BufStats, SubBuf};
use crate::Result;

/// Drains one buffer through [`MappedBuffer`], keeping its counters.
#[derive(Debug)]
pub struct MappedSource<B> {
    buf: B,
    /// The next sequence number to deliver.
    next: u64,
    stats: BufStats,
    scratch: Vec<u8>,
    finalized: bool,
}

impl<B: MappedBuffer> MappedSource<B> {
    /// Starts reading `buf` at the first sub-buffer nobody has consumed yet:
    /// what an earlier reader released is not counted as lost.
    pub fn new(mut buf: B) -> Result<Self> {
        let state = buf.state()?;
        let info = *buf.info();
        let stats = BufStats {
            cpu: info.cpu,
            ..BufStats::default()
        };
        Ok(MappedSource {
            next: state.consumed,
            buf,
            stats,
            scratch: Vec::with_capacity(info.subbuf_size as usize),
            finalized: false,
        })
    }

    /// The buffer this reads.
    pub fn buffer(&self) -> &B {
        &self.buf
    }

    /// The buffer this reads, mutably (the model's writer lives there).
    pub fn buffer_mut(&mut self) -> &mut B {
        &mut self.buf
    }

    /// Counters so far.
    pub fn stats(&self) -> &BufStats {
        &self.stats
    }

    /// True once the kernel finalized the buffer and all of it was read.
    pub fn finished(&self) -> bool {
        self.finalized
    }

    /// Records that the kernel finalized the buffer (poll reported it
    /// closed) and a last drain took what was left.
    pub fn mark_finalized(&mut self) {
        self.finalized = true;
    }

    /// Delivers every ready sub-buffer to `f` and releases it to the writer
    /// when `f` returns: in batches where the backend validates in place
    /// (the meta area: one `consume` per drain, or per half ring without
    /// overwrite), each on its own otherwise. Returns how many were
    /// delivered.
    pub fn drain(&mut self, f: &mut dyn FnMut(SubBuf<'_>) -> Result<()>) -> Result<u64> {
        let state = self.buf.state()?;
        self.stats.kernel = Some(state);
        let lapped = self.catch_up(&state);
        // Overwrite mode: what the writer took is lost; the next release
        // hands it back with the rest.
        self.lose(lapped);
        // Releases start at the kernel's consumed count, where the previous
        // drain left it (or another reader); `next` is not below it.
        let mut released = state.consumed;
        let mut delivered = 0;
        let result = self.deliver(state.produced, f, &mut delivered, &mut released);
        let release = self.release(&mut released);
        result?;
        release?;
        if state.finalized && self.next >= state.produced {
            self.finalized = true;
        }
        Ok(delivered)
    }

    /// Another reader may have consumed meanwhile (what it took is not
    /// ours); in overwrite mode the writer may have lapped the reader.
    /// Returns how many sub-buffers the lap took, now behind `next`.
    fn catch_up(&mut self, state: &BufState) -> u64 {
        let info = *self.buf.info();
        self.next = self.next.max(state.consumed);
        let oldest = state.oldest_intact(info.n_subbufs, info.overwrite);
        let lapped = oldest.saturating_sub(self.next);
        self.stats.max_backlog = self
            .stats
            .max_backlog
            .max(state.produced.saturating_sub(self.next + lapped));
        lapped
    }

    /// A sub-buffer delivered: counters.
    fn delivered(&mut self, loc: &SubbufLoc, len: u64) {
        self.stats.subbufs += 1;
        self.stats.bytes += len;
        if loc.lost_before > 0 {
            self.stats.drops_before += loc.lost_before;
            self.stats.subbufs_after_drops += 1;
        }
    }

    /// `count` sub-buffers from `next` on were overwritten: lost, passed.
    fn lose(&mut self, count: u64) {
        self.stats.lost_subbufs += count;
        self.next += count;
    }

    /// Hands the sub-buffers from `*released` up to `next` back to the
    /// writer with one `consume`. Returns the kernel's count of those
    /// overwritten meanwhile (0 with a meta area, where the reader checks
    /// the slot itself).
    fn release(&mut self, released: &mut u64) -> Result<u64> {
        if self.next <= *released {
            return Ok(0);
        }
        let consumed = self.buf.release(*released, self.next - *released)?;
        *released = self.next;
        Ok(consumed.lost)
    }

    /// Delivers the ready sub-buffers from `next` on, releasing them as it
    /// goes: one at a time without a meta area (relay-apps' control files,
    /// whose consume also says whether an overwrite-mode copy survived);
    /// with one, in no-overwrite mode every half ring, so that a slow
    /// callback does not keep the writer from the whole ring until the
    /// drain ends, and in overwrite mode (where the writer does not wait)
    /// not before the drain ends.
    fn deliver(
        &mut self,
        produced: u64,
        f: &mut dyn FnMut(SubBuf<'_>) -> Result<()>,
        delivered: &mut u64,
        released: &mut u64,
    ) -> Result<()> {
        let info = *self.buf.info();
        let each = !self.buf.validates_in_place();
        let release_every = if each { 1 } else { (info.n_subbufs / 2).max(1) };
        while self.next < produced {
            if (each || !info.overwrite) && self.next - *released >= release_every {
                self.release(released)?;
            }
            let seq = self.next;
            let loc = match self.buf.subbuf(seq)? {
                SubbufLookup::Ready(loc) => loc,
                SubbufLookup::Overwritten => {
                    // Its slot holds a later sub-buffer: lapped.
                    self.lose(1);
                    continue;
                }
                SubbufLookup::NotReady => break,
            };
            if info.overwrite {
                self.buf.copy_data(&loc, &mut self.scratch);
                self.next = seq + 1;
                // Without a meta area, the consume's lost count tells
                // whether the writer took the sub-buffer during the copy.
                let taken = if each {
                    self.release(released)? > 0
                } else {
                    false
                };
                if taken || !self.buf.still_holds(&loc) {
                    // The writer reused the slot while it was copied.
                    self.stats.lost_subbufs += 1;
                    continue;
                }
                self.delivered(&loc, self.scratch.len() as u64);
                *delivered += 1;
                f(SubBuf {
                    cpu: info.cpu,
                    seq,
                    data: &self.scratch,
                })?;
            } else {
                // No-overwrite: the writer never touches a ready sub-buffer
                // before it is consumed, so the mapping can be lent out.
                f(SubBuf {
                    cpu: info.cpu,
                    seq,
                    data: self.buf.data(&loc),
                })?;
                self.next = seq + 1;
                self.delivered(&loc, loc.data_len);
                *delivered += 1;
            }
        }
        Ok(())
    }

    /// Makes the partly filled sub-buffer ready, then drains everything.
    pub fn flush_and_drain(&mut self, f: &mut dyn FnMut(SubBuf<'_>) -> Result<()>) -> Result<u64> {
        self.buf.flush()?;
        self.drain(f)
    }

    /// For a live reader while the writer goes on: makes the partly filled
    /// sub-buffer ready where the backend can ([`MappedBuffer::flush_live`]),
    /// then drains. `None` (nothing read) where it cannot.
    pub fn take_partial(
        &mut self,
        f: &mut dyn FnMut(SubBuf<'_>) -> Result<()>,
    ) -> Result<Option<u64>> {
        if !self.buf.flush_live()? {
            return Ok(None);
        }
        self.drain(f).map(Some)
    }
}
