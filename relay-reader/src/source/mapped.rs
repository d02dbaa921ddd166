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
//!
//! The callback API ([`MappedSource::drain`]) and the pull API
//! ([`MappedSource::next`]) go through the same steps: look at the counters,
//! take the next ready sub-buffer, give it back when the consumer is done
//! with it, release what was given back. For the common case (meta area, no
//! overwrite) the callback API runs those steps in one loop of its own,
//! `deliver_lent`: a change to `step` or to the release policy goes there
//! too.

use crate::mapped::{BufState, MappedBuffer, SubbufLoc, SubbufLookup};
use crate::subbuf::{BufStats, Lender, SubBuf, SubBufGuard, Taken};
use crate::Result;

/// Drains one buffer through [`MappedBuffer`], keeping its counters.
#[derive(Debug)]
pub struct MappedSource<B: MappedBuffer> {
    buf: B,
    /// The next sequence number to deliver.
    next: u64,
    /// The kernel's consumed count as this reader left it: the sub-buffers
    /// from here to `next` were delivered or lost and are to be released.
    released: u64,
    /// The produced count at the last look at the counters: what is ready
    /// without looking again.
    ready_until: u64,
    /// That look found the buffer finalized.
    closed: bool,
    stats: BufStats,
    scratch: Vec<u8>,
    finalized: bool,
    /// Constant per buffer, kept here so that taking a sub-buffer does not
    /// ask the backend again: see [`MappedSource::step`].
    policy: ReleasePolicy,
}

/// When a [`MappedSource`] releases what it took, fixed when it opens the
/// buffer.
#[derive(Debug, Clone, Copy)]
struct ReleasePolicy {
    /// The backend does not validate in place: each sub-buffer is released
    /// on its own (its consume says whether an overwrite-mode copy holds).
    each: bool,
    /// Release once this many were taken and not released (1 with `each`,
    /// else half the ring); in overwrite mode with a meta area only at the
    /// end of a batch.
    every: u64,
    /// The buffer is in overwrite mode.
    overwrite: bool,
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
        let each = !buf.validates_in_place();
        let policy = ReleasePolicy {
            each,
            every: if each { 1 } else { (info.n_subbufs / 2).max(1) },
            overwrite: info.overwrite,
        };
        Ok(MappedSource {
            policy,
            next: state.consumed,
            released: state.consumed,
            ready_until: state.consumed,
            closed: false,
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
        self.look()?;
        let mut delivered = 0;
        let result = self.deliver(f, &mut delivered);
        let release = self.release();
        result?;
        release?;
        self.note_finalized();
        Ok(delivered)
    }

    /// The pull API over this one buffer: the next ready sub-buffer, or
    /// `None` when there is none; never waits. Dropping the guard gives the
    /// sub-buffer back; what was given back is released to the writer in
    /// batches, as by [`drain`](MappedSource::drain): with one `consume`
    /// once every sub-buffer seen ready at the last look at the counters
    /// was taken (before looking again, and so always before `next`
    /// returns `None`), and in no-overwrite mode also every half ring; each
    /// on its own where the backend does not validate in place. Dropping
    /// the source releases what is left.
    ///
    /// ```
    /// use relay_reader::model::ModelBuffer;
    /// use relay_reader::source::MappedSource;
    ///
    /// let mut src = MappedSource::new(ModelBuffer::new(256, 4, false))?;
    /// src.buffer_mut().write(b"hello\n");
    /// src.buffer_mut().flush_writer();
    /// while let Some(sb) = src.next()? {
    ///     assert_eq!(&*sb, b"hello\n");
    /// }
    /// assert_eq!(src.stats().subbufs, 1);
    /// # Ok::<(), relay_reader::Error>(())
    /// ```
    #[allow(clippy::should_implement_trait)] // fallible, and the item borrows the source
    pub fn next(&mut self) -> Result<Option<SubBufGuard<'_>>> {
        Ok(self.take(true)?.map(|taken| SubBufGuard::new(self, taken)))
    }

    /// The next ready sub-buffer for the pull API. Without `look`, only what
    /// the last look at the counters found ready; with it, once that is
    /// exhausted, releases what was given back and looks again. When
    /// nothing is ready, releases what was given back.
    pub(crate) fn take(&mut self, look: bool) -> Result<Option<Taken>> {
        if let Some(taken) = self.step()? {
            return Ok(Some(taken));
        }
        if look {
            self.release()?;
            self.look()?;
            if let Some(taken) = self.step()? {
                return Ok(Some(taken));
            }
        }
        self.release()?;
        self.note_finalized();
        Ok(None)
    }

    /// Hands back to the writer what was delivered or lost and not yet
    /// released (the pull API's batch), as dropping the source does.
    pub fn release_pending(&mut self) -> Result<()> {
        self.release().map(|_| ())
    }

    /// Looks at the counters: what is ready, what another reader consumed
    /// meanwhile, what an overwrite lap took (lost).
    fn look(&mut self) -> Result<()> {
        let state = self.buf.state()?;
        self.stats.kernel = Some(state);
        let lapped = self.catch_up(&state);
        // Overwrite mode: what the writer took is lost; the next release
        // hands it back with the rest.
        self.lose(lapped);
        // Releases start at the kernel's consumed count, where this reader
        // left it (or another reader); `next` is not below it.
        self.released = state.consumed;
        self.ready_until = state.produced;
        self.closed = state.finalized;
        Ok(())
    }

    /// The buffer is finished once the kernel finalized it and everything
    /// it produced was read.
    fn note_finalized(&mut self) {
        if self.closed && self.next >= self.ready_until {
            self.finalized = true;
        }
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

    /// Hands the sub-buffers from `released` up to `next` back to the
    /// writer with one `consume`. Returns the kernel's count of those
    /// overwritten meanwhile (0 with a meta area, where the reader checks
    /// the slot itself).
    fn release(&mut self) -> Result<u64> {
        if self.next <= self.released {
            return Ok(0);
        }
        let consumed = self.buf.release(self.released, self.next - self.released)?;
        self.released = self.next;
        Ok(consumed.lost)
    }

    /// Delivers the ready sub-buffers to `f`, giving each back when `f`
    /// returns.
    fn deliver(
        &mut self,
        f: &mut dyn FnMut(SubBuf<'_>) -> Result<()>,
        delivered: &mut u64,
    ) -> Result<()> {
        if !self.policy.each && !self.policy.overwrite {
            return self.deliver_lent(f, delivered);
        }
        while let Some(taken) = self.step()? {
            f(SubBuf {
                cpu: taken.cpu,
                seq: taken.seq,
                data: self.lent(&taken),
            })?;
            self.give_back(&taken);
            *delivered += 1;
        }
        Ok(())
    }

    /// [`deliver`](Self::deliver) where the backend validates in place and
    /// the writer does not overwrite (the kernel's mapping, in the default
    /// mode): the steps of [`step`](Self::step) and
    /// [`give_back`](Lender::give_back) for that case in one loop, each
    /// sub-buffer lent out straight from the mapping. Kept in step with
    /// them: the tests that compare the pull API with the callbacks
    /// (`meta_area_drain_releases_a_batch_with_one_consume`) hold both to
    /// the same releases and counts.
    #[inline]
    fn deliver_lent(
        &mut self,
        f: &mut dyn FnMut(SubBuf<'_>) -> Result<()>,
        delivered: &mut u64,
    ) -> Result<()> {
        let (cpu, every) = (self.stats.cpu, self.policy.every);
        while self.next < self.ready_until {
            if self.next - self.released >= every {
                self.release()?;
            }
            let seq = self.next;
            match self.buf.subbuf(seq)? {
                SubbufLookup::Ready(loc) => {
                    f(SubBuf {
                        cpu,
                        seq,
                        data: self.buf.data(&loc),
                    })?;
                    self.next = seq + 1;
                    self.delivered(&loc, loc.data_len);
                    *delivered += 1;
                }
                // As `step` counts it.
                SubbufLookup::Overwritten => self.lose(1),
                SubbufLookup::NotReady => break,
            }
        }
        Ok(())
    }

    /// Takes the next sub-buffer the last look found ready, releasing what
    /// is due first: one at a time without a meta area (relay-apps' control
    /// files, whose consume also says whether an overwrite-mode copy
    /// survived); with one, in no-overwrite mode every half ring, so that a
    /// slow consumer does not keep the writer from the whole ring until the
    /// batch ends, and in overwrite mode (where the writer does not wait)
    /// not before the batch ends. In overwrite mode the data is copied and
    /// validated here, and counted; a no-overwrite sub-buffer is counted
    /// when it is given back.
    fn step(&mut self) -> Result<Option<Taken>> {
        let ReleasePolicy {
            each,
            every,
            overwrite,
        } = self.policy;
        while self.next < self.ready_until {
            if (each || !overwrite) && self.next - self.released >= every {
                self.release()?;
            }
            let seq = self.next;
            let loc = match self.buf.subbuf(seq)? {
                SubbufLookup::Ready(loc) => loc,
                SubbufLookup::Overwritten => {
                    // Its slot holds a later sub-buffer: lapped.
                    self.lose(1);
                    continue;
                }
                SubbufLookup::NotReady => return Ok(None),
            };
            let mut taken = Taken {
                cpu: self.stats.cpu,
                seq,
                loc,
                copied: false,
            };
            if !overwrite {
                // No-overwrite: the writer never touches a ready sub-buffer
                // before it is consumed, so the mapping can be lent out.
                return Ok(Some(taken));
            }
            self.buf.copy_data(&loc, &mut self.scratch);
            self.next = seq + 1;
            // Without a meta area, the consume's lost count tells whether
            // the writer took the sub-buffer during the copy.
            let gone = if each { self.release()? > 0 } else { false };
            if gone || !self.buf.still_holds(&loc) {
                // The writer reused the slot while it was copied.
                self.stats.lost_subbufs += 1;
                continue;
            }
            self.delivered(&loc, self.scratch.len() as u64);
            taken.copied = true;
            return Ok(Some(taken));
        }
        Ok(None)
    }

    /// Makes the partly filled sub-buffer ready (the pull API then takes
    /// it with the rest).
    pub fn flush(&mut self) -> Result<()> {
        self.buf.flush()
    }

    /// Makes the partly filled sub-buffer ready, then drains everything.
    pub fn flush_and_drain(&mut self, f: &mut dyn FnMut(SubBuf<'_>) -> Result<()>) -> Result<u64> {
        self.flush()?;
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

impl<B: MappedBuffer> Lender for MappedSource<B> {
    fn lent(&self, taken: &Taken) -> &[u8] {
        if taken.copied {
            &self.scratch
        } else {
            self.buf.data(&taken.loc)
        }
    }

    fn give_back(&mut self, taken: &Taken) {
        if !taken.copied && taken.seq == self.next {
            self.next = taken.seq + 1;
            self.delivered(&taken.loc, taken.loc.data_len);
        }
    }
}

/// Releases what was delivered and not yet released: the sub-buffers go
/// back to the writer and a later reader starts after them.
impl<B: MappedBuffer> Drop for MappedSource<B> {
    fn drop(&mut self) {
        let _ = self.release();
    }
}
