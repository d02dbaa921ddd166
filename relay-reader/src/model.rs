//! A kernel-free model of one relay buffer, faithful to `kernel/relay.c`
//! (Linux 6.12: `relay_write`, `relay_switch_subbuf`, `relay_buf_full`) and to
//! the `relay_app` sample helper that implements the ioctl ABI on stock
//! kernels (the relay-apps padding header, no-overwrite and overwrite modes,
//! loss counters, flush).
//!
//! [`ModelBuffer::new`] models a kernel with the meta area: the writer keeps
//! `struct relay_meta` and the slots up to date (counters under the
//! seq_lock, each slot's sequence number stored before the slot is
//! written), and the model answers [`MappedBuffer::state`] and
//! [`MappedBuffer::subbuf`] by reading that image with the same code
//! ([`crate::meta`]) that reads the kernel's mapping: no system call per
//! sub-buffer, overwrite laps found by the slot check, one `consume` per
//! drain. [`ModelBuffer::without_meta`] models a backend without a meta area
//! (the relay-apps control files), which the reader validates through
//! `consume`, one sub-buffer at a time.
//!
//! It lets the reading logic be tested on the host in milliseconds: a test
//! writes records, the reader drains through the same [`MappedBuffer`] trait it
//! uses against the kernel, and the counters must add up.

use crate::mapped::{BufInfo, BufState, MappedBuffer, Released, SubbufLoc, SubbufLookup};
use crate::meta::{image_len, MetaImage, MetaLayout};
use crate::Result;
use relay_sys::relay_app::PADDING_HEADER_SIZE;

/// The alignment of the model's buffer: a page, as the kernel's.
const PAGE: usize = 4096;

/// One modelled relay buffer with its writer.
#[derive(Debug, Clone)]
pub struct ModelBuffer {
    info: BufInfo,
    subbuf_size: usize,
    n_subbufs: usize,
    /// The buffer's bytes, from `base` on: page-aligned like the kernel's
    /// (vmap'ed) buffer, so that copies out of the model run at the speed
    /// they have from a mapping, the same in every model (`relay-bench
    /// host` compares two). A clone keeps `base`: the same bytes, perhaps
    /// not aligned.
    mem: Vec<u8>,
    base: usize,
    /// `buf->padding[]`
    padding: Vec<usize>,
    /// `buf->offset`; `subbuf_size + 1` while the writer is stopped (full).
    offset: usize,
    /// Index of `buf->data`, the sub-buffer being filled.
    data: usize,
    produced: u64,
    consumed: u64,
    prev_padding: usize,
    flushing: bool,
    lost_full: u64,
    lost_toobig: u64,
    lost_overwritten: u64,
    finalized: bool,
    /// Records a "concurrent" writer adds while the reader copies a
    /// sub-buffer, before it checks the slot again and `CONSUME`s.
    racing_writes: Vec<Vec<u8>>,
    /// The meta area and its layout; `None` for a backend without one.
    meta: Option<(MetaImage, MetaLayout)>,
    /// Writes dropped since the writer last started a sub-buffer: the next
    /// slot's `lost_before`.
    dropped_since_start: u64,
}

impl ModelBuffer {
    /// A buffer like `relay_app_create()` makes: every sub-buffer starts with
    /// the 4-byte padding header. With the meta area, as the kernel series
    /// maps it.
    pub fn new(subbuf_size: usize, n_subbufs: usize, overwrite: bool) -> Self {
        Self::build(subbuf_size, n_subbufs, overwrite, true)
    }

    /// The same buffer without a meta area (state, locations and `consume`
    /// per sub-buffer), as the relay-apps control files offer it.
    pub fn without_meta(subbuf_size: usize, n_subbufs: usize, overwrite: bool) -> Self {
        Self::build(subbuf_size, n_subbufs, overwrite, false)
    }

    fn build(subbuf_size: usize, n_subbufs: usize, overwrite: bool, meta: bool) -> Self {
        assert!(subbuf_size > PADDING_HEADER_SIZE && n_subbufs >= 2);
        let mmap_len = (subbuf_size * n_subbufs).next_multiple_of(4096);
        let info = BufInfo {
            subbuf_size: subbuf_size as u64,
            n_subbufs: n_subbufs as u64,
            mmap_len: mmap_len as u64,
            cpu: 0,
            global: false,
            overwrite,
            meta_len: if meta { image_len(n_subbufs as u64) } else { 0 },
        };
        let meta = meta.then(|| {
            let image = MetaImage::new(&info);
            let layout = MetaLayout::parse(image.words(), &info).expect("the model's meta area");
            (image, layout)
        });
        let mut buf = ModelBuffer {
            info,
            subbuf_size,
            n_subbufs,
            // 6.12 does not zero buffer pages; stale bytes make bugs show.
            mem: vec![0xa5; mmap_len + PAGE - 1],
            base: 0,
            padding: vec![0; n_subbufs],
            offset: 0,
            data: 0,
            produced: 0,
            consumed: 0,
            prev_padding: 0,
            flushing: false,
            lost_full: 0,
            lost_toobig: 0,
            lost_overwritten: 0,
            finalized: false,
            racing_writes: Vec::new(),
            meta,
            dropped_since_start: 0,
        };
        buf.base = (PAGE - buf.mem.as_ptr() as usize % PAGE) % PAGE;
        // relay_reset(): the first sub-buffer is started with no previous one.
        buf.subbuf_start(0, None, 0);
        buf
    }

    /// `relay_write()`: copies `record` into the buffer, switching sub-buffer
    /// when it does not fit. Returns false when the record was dropped.
    pub fn write(&mut self, record: &[u8]) -> bool {
        let mut length = record.len();
        if self.offset + length > self.subbuf_size {
            length = self.switch_subbuf(length);
        }
        if length == 0 {
            return false;
        }
        let start = self.data * self.subbuf_size + self.offset;
        self.bytes_mut(start, length).copy_from_slice(record);
        self.offset += length;
        if let Some((image, _)) = &self.meta {
            // __relay_commit(): the bytes, then the count (release).
            image.set_committed(self.offset as u32);
        }
        true
    }

    /// The writer's counters into the meta area, under its seq_lock.
    fn publish(&self) {
        if let Some((image, _)) = &self.meta {
            // Every byte the model wrote is committed.
            image.set_committed(self.offset.min(self.subbuf_size) as u32);
            image.publish(
                self.produced,
                self.lost_full,
                self.lost_toobig,
                self.lost_overwritten,
            );
        }
    }

    /// A write dropped because it does not fit a sub-buffer.
    fn drop_toobig(&mut self) {
        self.lost_toobig += 1;
        self.dropped_since_start += 1;
        self.publish();
    }

    /// `relay_switch_subbuf()`.
    fn switch_subbuf(&mut self, length: usize) -> usize {
        if length > self.subbuf_size {
            self.drop_toobig();
            return 0;
        }
        let mut old = None;
        if self.offset != self.subbuf_size + 1 {
            self.prev_padding = self.subbuf_size - self.offset;
            let old_subbuf = (self.produced % self.n_subbufs as u64) as usize;
            self.padding[old_subbuf] = self.prev_padding;
            if let Some((image, _)) = &self.meta {
                image.finish_slot(
                    self.produced,
                    self.n_subbufs as u64,
                    self.prev_padding as u32,
                );
            }
            self.produced += 1;
            self.publish();
            old = Some(self.data);
        }
        let new_subbuf = (self.produced % self.n_subbufs as u64) as usize;
        self.offset = 0;
        if !self.subbuf_start(new_subbuf, old, self.prev_padding) {
            self.offset = self.subbuf_size + 1;
            return 0;
        }
        self.data = new_subbuf;
        self.padding[new_subbuf] = 0;
        if length + self.offset > self.subbuf_size {
            self.drop_toobig();
            return 0;
        }
        length
    }

    /// `relay_buf_full()`.
    fn full(&self) -> bool {
        self.produced - self.consumed >= self.n_subbufs as u64
    }

    /// The relay_app helper's `subbuf_start` callback.
    fn subbuf_start(&mut self, new: usize, prev: Option<usize>, prev_padding: usize) -> bool {
        if let Some(prev) = prev {
            let at = prev * self.subbuf_size;
            self.bytes_mut(at, PADDING_HEADER_SIZE)
                .copy_from_slice(&(prev_padding as u32).to_ne_bytes());
        }
        if self.full() {
            if !self.info.overwrite {
                if !self.flushing {
                    self.lost_full += 1;
                    self.dropped_since_start += 1;
                    self.publish();
                }
                return false;
            }
            self.lost_overwritten += 1;
            self.publish();
        }
        let _ = new;
        // The slot names its new sub-buffer before anything is written
        // into it.
        if let Some((image, _)) = &self.meta {
            image.start_slot(
                self.produced,
                self.n_subbufs as u64,
                PADDING_HEADER_SIZE as u32,
                self.dropped_since_start,
            );
        }
        self.dropped_since_start = 0;
        // subbuf_start_reserve()
        self.offset += PADDING_HEADER_SIZE;
        true
    }

    /// `RELAY_IOC_FLUSH` as the helper does it: close the partly filled
    /// sub-buffer unless it holds no data.
    pub fn flush_writer(&mut self) {
        if self.offset > PADDING_HEADER_SIZE && self.offset <= self.subbuf_size {
            self.flushing = true;
            self.switch_subbuf(0);
            self.flushing = false;
        }
    }

    /// `relay_close()`: no more data; poll reports POLLERR.
    pub fn finalize(&mut self) {
        self.finalized = true;
        if let Some((image, _)) = &self.meta {
            image.finalize();
        }
    }

    /// Queues records that a writer on another CPU adds while the reader
    /// reads a sub-buffer: they are written right after the next
    /// [`MappedBuffer::subbuf`] of this model answers with a location (the
    /// slot lookup in the meta area), so the reader's copy sees what they
    /// did. A [`ModelMapping`] over the model never runs them.
    pub fn race_before_consume(&mut self, records: Vec<Vec<u8>>) {
        self.racing_writes.extend(records);
    }

    /// The buffer's bytes `start .. start + len`, for the writer.
    fn bytes_mut(&mut self, start: usize, len: usize) -> &mut [u8] {
        let start = self.base + start;
        &mut self.mem[start..start + len]
    }

    /// Writes the queued racing records now (no `CONSUME` came to run them).
    #[inline]
    pub fn finish_races(&mut self) {
        if self.racing_writes.is_empty() {
            return;
        }
        for record in std::mem::take(&mut self.racing_writes) {
            self.write(&record);
        }
    }

    /// Sub-buffers produced so far.
    pub fn produced(&self) -> u64 {
        self.produced
    }

    /// True when the model has the meta area ([`ModelBuffer::new`]).
    pub fn has_meta(&self) -> bool {
        self.meta.is_some()
    }

    fn model_error(what: String) -> crate::Error {
        crate::Error::Corrupt {
            path: "model".into(),
            what,
        }
    }
}

impl MappedBuffer for ModelBuffer {
    #[inline]
    fn info(&self) -> &BufInfo {
        &self.info
    }

    // Inlined into the drain: ModelMapping reads the counters through it,
    // once per drain (see `MetaLayout::read_state`).
    #[inline(always)]
    fn state(&mut self) -> Result<BufState> {
        if let Some((image, layout)) = &self.meta {
            // What a reader of the mapping sees.
            let (state, _) = layout
                .read_state(image.words())
                .map_err(Self::model_error)?;
            return Ok(state);
        }
        Ok(BufState {
            produced: self.produced,
            consumed: self.consumed,
            write_offset: self.offset.min(self.subbuf_size) as u64,
            lost_full: self.lost_full,
            lost_toobig: self.lost_toobig,
            lost_overwritten: self.lost_overwritten,
            finalized: self.finalized,
        })
    }

    #[inline(always)]
    fn subbuf(&mut self, seq: u64) -> Result<SubbufLookup> {
        if seq < self.consumed {
            // A harmless read of the meta area, but a reader that looks
            // below consumed has lost track.
            return Err(Self::model_error(format!(
                "sub-buffer {seq} below consumed {} (EINVAL)",
                self.consumed
            )));
        }
        let lookup = if let Some((image, layout)) = &self.meta {
            layout
                .lookup(image.words(), seq)
                .map_err(Self::model_error)?
        } else if seq >= self.produced {
            SubbufLookup::NotReady
        } else if self.info.overwrite && seq + self.n_subbufs as u64 <= self.produced {
            SubbufLookup::Overwritten
        } else {
            let idx = (seq % self.n_subbufs as u64) as usize;
            let header = PADDING_HEADER_SIZE;
            SubbufLookup::Ready(SubbufLoc {
                seq,
                data_offset: (idx * self.subbuf_size + header) as u64,
                data_len: (self.subbuf_size - header - self.padding[idx]) as u64,
                padding: self.padding[idx] as u64,
                lost_before: 0,
            })
        };
        if let SubbufLookup::Ready(_) = lookup {
            // The writer on another CPU goes on while the reader reads.
            self.finish_races();
        }
        Ok(lookup)
    }

    #[inline]
    fn release(&mut self, seq: u64, count: u64) -> Result<Released> {
        if count == 0 {
            // Only asks for the consumed count; `seq` is ignored.
            return Ok(Released {
                lost: 0,
                consumed: self.consumed,
            });
        }
        if seq != self.consumed || seq + count > self.produced {
            return Err(Self::model_error(format!(
                "CONSUME {seq}+{count} outside the ready range {}..{} (EINVAL)",
                self.consumed, self.produced
            )));
        }
        let oldest = (self.produced + 1).saturating_sub(self.n_subbufs as u64);
        let lost = if self.info.overwrite {
            oldest.saturating_sub(seq).min(count)
        } else {
            0
        };
        self.consumed = seq + count;
        if let Some((image, _)) = &self.meta {
            image.set_consumed(self.consumed);
        }
        Ok(Released {
            lost,
            consumed: self.consumed,
        })
    }

    fn flush(&mut self) -> Result<()> {
        self.flush_writer();
        Ok(())
    }

    fn flush_live(&mut self) -> Result<bool> {
        self.flush_writer();
        Ok(true)
    }

    #[inline]
    fn data(&self, loc: &SubbufLoc) -> &[u8] {
        let start = self.base + loc.data_offset as usize;
        &self.mem[start..start + loc.data_len as usize]
    }

    #[inline]
    fn validates_in_place(&self) -> bool {
        self.meta.is_some()
    }

    #[inline]
    fn still_holds(&self, loc: &SubbufLoc) -> bool {
        match &self.meta {
            Some((image, layout)) => layout.still_holds(image.words(), loc),
            None => true,
        }
    }
}

/// A [`MappedBuffer`] over a [`ModelBuffer`] that records what the reader asks
/// of it: how many meta-area reads (`state`, `subbuf`), which `CONSUME`s,
/// how many `FLUSH`es, and from them the system calls a real relay file
/// would have cost. Tests assert on the calls; the host benchmark reports
/// the system calls per sub-buffer.
#[derive(Debug)]
pub struct CallRecorder {
    /// The model the calls go to.
    pub model: ModelBuffer,
    /// `state` calls.
    pub states: u64,
    /// `subbuf` calls.
    pub subbufs: u64,
    /// `consume` calls, as `(seq, count)`.
    pub consumes: Vec<(u64, u64)>,
    /// `flush` calls.
    pub flushes: u64,
    /// Report no loss from `consume`, so that only the reader's own check
    /// of a sub-buffer's slot can find a lap.
    pub consume_hides_loss: bool,
}

impl CallRecorder {
    /// Records the calls made to `model`.
    pub fn new(model: ModelBuffer) -> Self {
        CallRecorder {
            model,
            states: 0,
            subbufs: 0,
            consumes: Vec::new(),
            flushes: 0,
            consume_hides_loss: false,
        }
    }

    /// The system calls the recorded calls cost on a relay file: one per
    /// `CONSUME` and `FLUSH` (ioctls), and one per `state` and `subbuf`
    /// only without a meta area (where they would be ioctls too; with one
    /// they are reads of the mapping).
    pub fn syscalls(&self) -> u64 {
        let lookups = if self.model.validates_in_place() {
            0
        } else {
            self.states + self.subbufs
        };
        self.consumes.len() as u64 + self.flushes + lookups
    }
}

impl MappedBuffer for CallRecorder {
    #[inline]
    fn info(&self) -> &BufInfo {
        self.model.info()
    }
    #[inline]
    fn state(&mut self) -> Result<BufState> {
        self.states += 1;
        self.model.state()
    }
    #[inline(always)]
    fn subbuf(&mut self, seq: u64) -> Result<SubbufLookup> {
        self.subbufs += 1;
        self.model.subbuf(seq)
    }
    #[inline]
    fn release(&mut self, seq: u64, count: u64) -> Result<Released> {
        self.consumes.push((seq, count));
        let mut consumed = self.model.release(seq, count)?;
        if self.consume_hides_loss {
            consumed.lost = 0;
        }
        Ok(consumed)
    }
    fn flush(&mut self) -> Result<()> {
        self.flushes += 1;
        self.model.flush()
    }
    fn flush_live(&mut self) -> Result<bool> {
        self.flushes += 1;
        self.model.flush_live()
    }
    #[inline]
    fn data(&self, loc: &SubbufLoc) -> &[u8] {
        self.model.data(loc)
    }
    fn copy_data(&self, loc: &SubbufLoc, out: &mut Vec<u8>) {
        self.model.copy_data(loc, out)
    }
    #[inline]
    fn validates_in_place(&self) -> bool {
        self.model.validates_in_place()
    }
    #[inline]
    fn still_holds(&self, loc: &SubbufLoc) -> bool {
        self.model.still_holds(loc)
    }
}

/// The model read the way [`KernelBuffer`](crate::kernel::KernelBuffer)
/// reads a relay file: the counters and slots from the meta image with the
/// same [`MetaLayout`] calls, the bytes from the buffer, `CONSUME` (the one
/// system call) to the model. None of [`ModelBuffer`]'s own checks on the
/// reader run (look-ups below the consumed count, racing writes), so a
/// reader over it makes the look-ups it makes over the kernel's mapping:
/// what `relay-bench host` times. It is a little lighter than
/// `KernelBuffer` all the same: that one also checks the range and the
/// alignment of the meta area's words at each call, and copies an
/// overwrite-mode sub-buffer with `Mapping::copy_racy`. It counts the
/// ioctls a relay file would have answered.
#[derive(Debug)]
pub struct ModelMapping {
    /// The model; its writer is driven between drains. It keeps its meta
    /// area (a model put here without one makes every read panic).
    pub model: ModelBuffer,
    /// `RELAY_IOC_CONSUME` calls.
    pub consumes: u64,
    /// `RELAY_IOC_FLUSH` calls.
    pub flushes: u64,
}

impl ModelMapping {
    /// Reads `model` through its meta image; `None` for a model without
    /// one ([`ModelBuffer::without_meta`]), which a kernel mapping never is.
    pub fn new(model: ModelBuffer) -> Option<Self> {
        model.has_meta().then_some(ModelMapping {
            model,
            consumes: 0,
            flushes: 0,
        })
    }

    /// The system calls the reader made: one per `CONSUME` and `FLUSH`.
    pub fn syscalls(&self) -> u64 {
        self.consumes + self.flushes
    }

    #[inline(always)]
    fn meta(&self) -> (&MetaImage, &MetaLayout) {
        let (image, layout) = self
            .model
            .meta
            .as_ref()
            .expect("checked in ModelMapping::new");
        (image, layout)
    }
}

impl MappedBuffer for ModelMapping {
    #[inline]
    fn info(&self) -> &BufInfo {
        self.model.info()
    }

    #[inline(always)]
    fn state(&mut self) -> Result<BufState> {
        // The model's own answer is already the meta image's.
        self.model.state()
    }

    #[inline(always)]
    fn subbuf(&mut self, seq: u64) -> Result<SubbufLookup> {
        let (image, layout) = self.meta();
        layout
            .lookup(image.words(), seq)
            .map_err(ModelBuffer::model_error)
    }

    #[inline]
    fn release(&mut self, seq: u64, count: u64) -> Result<Released> {
        self.consumes += 1;
        self.model.release(seq, count)
    }

    fn flush(&mut self) -> Result<()> {
        self.flushes += 1;
        self.model.flush()
    }

    fn flush_live(&mut self) -> Result<bool> {
        self.flushes += 1;
        self.model.flush_live()
    }

    #[inline]
    fn data(&self, loc: &SubbufLoc) -> &[u8] {
        self.model.data(loc)
    }

    #[inline]
    fn validates_in_place(&self) -> bool {
        true
    }

    #[inline]
    fn still_holds(&self, loc: &SubbufLoc) -> bool {
        self.model.still_holds(loc)
    }
}
