//! Reading through the relay ioctl ABI: zero-copy for no-overwrite buffers,
//! copy-then-validate for overwrite buffers.

use crate::abi::{RelayAbi, SubbufLookup};
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
    /// when `f` returns. Returns how many were delivered.
    pub fn drain(&mut self, f: &mut dyn FnMut(SubBuf<'_>) -> Result<()>) -> Result<u64> {
        let info = *self.buf.info();
        let state = self.buf.state()?;
        self.stats.kernel = Some(KernelCounters::from(&state));
        // Another reader may have consumed meanwhile; what it took is not ours.
        self.next = self.next.max(state.consumed);
        let oldest = state.oldest_intact(info.n_subbufs, info.overwrite);
        if oldest > self.next {
            // Overwrite mode: the writer lapped us. Release what it took, so
            // that the kernel's consumed count (and with it its overwrite
            // counter) follows the reader.
            self.skip(oldest - self.next)?;
        }
        self.stats.max_backlog = self.stats.max_backlog.max(state.produced - self.next);
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
                if consumed.lost > 0 {
                    self.stats.lost_subbufs += consumed.lost;
                    continue;
                }
                self.stats.subbufs += 1;
                self.stats.bytes += self.scratch.len() as u64;
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
                self.stats.subbufs += 1;
                self.stats.bytes += loc.data_len;
                delivered += 1;
            }
        }
        if state.finalized && self.next >= state.produced {
            self.finalized = true;
        }
        Ok(delivered)
    }

    /// Counts `count` overwritten sub-buffers from `next` on as lost and
    /// releases them to the kernel.
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
