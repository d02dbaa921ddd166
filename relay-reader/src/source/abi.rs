//! Reading through the relay ABI: zero-copy for no-overwrite buffers,
//! copy-then-validate for overwrite buffers.
//!
//! Where the backend reads the meta area ([`RelayAbi::validates_in_place`]),
//! a drain reads the counters and every slot from memory, validates an
//! overwrite-mode copy by its slot ([`RelayAbi::still_holds`]) and releases
//! everything it went through with one `consume` at the end: one system call
//! per drain. Otherwise (the relay-apps control files) it releases each
//! sub-buffer on its own, since the lost count of that `consume` is what validates an
//! overwrite-mode copy.

use crate::abi::{BufState, RelayAbi, SubbufLoc, SubbufLookup};
use crate::subbuf::{BufStats, KernelCounters, SubBuf};
use crate::Result;

/// Drains one buffer through [`RelayAbi`], keeping its counters.
#[derive(Debug)]
pub struct AbiSource<B> {
    buf: B,
    /// The next sequence number to deliver.
    next: u64,
    stats: BufStats,
    scratch: Vec<u8>,
    finalized: bool,
}

impl<B: RelayAbi> AbiSource<B> {
    /// Starts reading `buf` at the first sub-buffer nobody has consumed yet:
    /// what an earlier reader released is not counted as lost.
    pub fn new(mut buf: B) -> Result<Self> {
        let state = buf.state()?;
        let info = *buf.info();
        let stats = BufStats {
            cpu: info.cpu,
            ..BufStats::default()
        };
        Ok(AbiSource {
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

    /// Records that poll reported the buffer closed after a final drain.
    pub fn mark_closed(&mut self) {
        self.finalized = true;
    }

    /// Delivers every ready sub-buffer to `f` and releases it to the writer
    /// when `f` returns: all of them with one `consume` at the end where the
    /// backend validates in place, each on its own otherwise. Returns how
    /// many were delivered.
    pub fn drain(&mut self, f: &mut dyn FnMut(SubBuf<'_>) -> Result<()>) -> Result<u64> {
        let state = self.buf.state()?;
        self.stats.kernel = Some(KernelCounters::from(&state));
        let delivered = if self.buf.validates_in_place() {
            self.drain_batch(&state, f)?
        } else {
            self.drain_each(&state, f)?
        };
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

    /// The meta-area path: everything from memory, one `consume` for all
    /// the sub-buffers gone through (delivered or lost), also when `f`
    /// fails (up to the one it failed on).
    fn drain_batch(
        &mut self,
        state: &BufState,
        f: &mut dyn FnMut(SubBuf<'_>) -> Result<()>,
    ) -> Result<u64> {
        let lapped = self.catch_up(state);
        // Overwrite mode: what the writer took is lost; the batch's consume
        // releases it with the rest.
        self.stats.lost_subbufs += lapped;
        self.next += lapped;
        // The batch starts at the kernel's consumed count, where the
        // previous drain's consume left it (or another reader's); `next` is
        // not below it (`catch_up`).
        let mut from = state.consumed;
        let mut delivered = 0;
        let result = self.deliver_batch(state.produced, f, &mut delivered, &mut from);
        let released = if self.next > from {
            self.buf.consume(from, self.next - from).map(|_| ())
        } else {
            Ok(())
        };
        result?;
        released?;
        Ok(delivered)
    }

    /// Delivers the ready sub-buffers from `next` on. In no-overwrite mode
    /// it releases them every half ring (from `*from`, which it advances),
    /// so that a slow callback does not keep the writer from the whole
    /// ring until the batch ends: one CONSUME per `n_subbufs / 2`
    /// sub-buffers at most.
    fn deliver_batch(
        &mut self,
        produced: u64,
        f: &mut dyn FnMut(SubBuf<'_>) -> Result<()>,
        delivered: &mut u64,
        from: &mut u64,
    ) -> Result<()> {
        let info = *self.buf.info();
        let release_every = (info.n_subbufs / 2).max(1);
        while self.next < produced {
            if !info.overwrite && self.next - *from >= release_every {
                self.buf.consume(*from, self.next - *from)?;
                *from = self.next;
            }
            let seq = self.next;
            let loc = match self.buf.subbuf(seq)? {
                SubbufLookup::Ready(loc) => loc,
                SubbufLookup::Overwritten => {
                    // Its slot holds a later sub-buffer: lapped.
                    self.stats.lost_subbufs += 1;
                    self.next += 1;
                    continue;
                }
                SubbufLookup::NotReady => break,
            };
            if info.overwrite {
                self.buf.copy_data(&loc, &mut self.scratch);
                self.next = seq + 1;
                if !self.buf.still_holds(&loc) {
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

    /// Without a meta area (the relay-apps control files): a lookup and a
    /// `consume` per sub-buffer, the lost count of the latter validating an
    /// overwrite-mode copy.
    fn drain_each(
        &mut self,
        state: &BufState,
        f: &mut dyn FnMut(SubBuf<'_>) -> Result<()>,
    ) -> Result<u64> {
        let info = *self.buf.info();
        let lapped = self.catch_up(state);
        if lapped > 0 {
            // Overwrite mode: the writer lapped us. Release what it took, so
            // that the kernel's consumed count (and with it its overwrite
            // counter) follows the reader.
            self.skip(lapped)?;
        }
        let mut delivered = 0;
        while self.next < state.produced {
            let seq = self.next;
            let loc = match self.buf.subbuf(seq)? {
                SubbufLookup::Ready(loc) => loc,
                SubbufLookup::Overwritten => {
                    self.skip(1)?;
                    continue;
                }
                SubbufLookup::NotReady => break,
            };
            if info.overwrite {
                self.buf.copy_data(&loc, &mut self.scratch);
                let consumed = self.buf.consume(seq, 1)?;
                self.next = seq + 1;
                if consumed.lost > 0 || !self.buf.still_holds(&loc) {
                    self.stats.lost_subbufs += 1;
                    continue;
                }
                self.delivered(&loc, self.scratch.len() as u64);
                delivered += 1;
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
                self.buf.consume(seq, 1)?;
                self.next = seq + 1;
                self.delivered(&loc, loc.data_len);
                delivered += 1;
            }
        }
        Ok(delivered)
    }

    /// Counts `count` overwritten sub-buffers from `next` on as lost and
    /// releases them (without a meta area).
    fn skip(&mut self, count: u64) -> Result<()> {
        self.buf.consume(self.next, count)?;
        self.stats.lost_subbufs += count;
        self.next += count;
        Ok(())
    }

    /// Makes the partly filled sub-buffer ready, then drains everything.
    pub fn flush_and_drain(&mut self, f: &mut dyn FnMut(SubBuf<'_>) -> Result<()>) -> Result<u64> {
        self.buf.flush()?;
        self.drain(f)
    }
}
