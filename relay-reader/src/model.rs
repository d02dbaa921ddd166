//! A kernel-free model of one relay buffer, faithful to `kernel/relay.c`
//! (Linux 6.12: `relay_write`, `relay_switch_subbuf`, `relay_buf_full`) and to
//! the `relay_app` sample helper that implements the ioctl ABI on stock
//! kernels (the relay-apps padding header, no-overwrite and overwrite modes,
//! loss counters, flush).
//!
//! It lets the reading logic be tested on the host in milliseconds: a test
//! writes records, the reader drains through the same [`RelayAbi`] trait it
//! uses against the kernel, and the counters must add up.

use crate::abi::{BufInfo, BufState, Consumed, RelayAbi, SubbufLoc, SubbufLookup};
use crate::Result;
use relay_sys::relay_app::PADDING_HEADER_SIZE;

/// One modelled relay buffer with its writer.
#[derive(Debug, Clone)]
pub struct ModelBuffer {
    info: BufInfo,
    subbuf_size: usize,
    n_subbufs: usize,
    mem: Vec<u8>,
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
    /// Records a "concurrent" writer adds between `GET_SUBBUF` and `CONSUME`.
    racing_writes: Vec<Vec<u8>>,
}

impl ModelBuffer {
    /// A buffer like `relay_app_create()` makes: every sub-buffer starts with
    /// the 4-byte padding header.
    pub fn new(subbuf_size: usize, n_subbufs: usize, overwrite: bool) -> Self {
        assert!(subbuf_size > PADDING_HEADER_SIZE && n_subbufs >= 2);
        let mmap_len = (subbuf_size * n_subbufs).next_multiple_of(4096);
        let mut buf = ModelBuffer {
            info: BufInfo {
                subbuf_size: subbuf_size as u64,
                n_subbufs: n_subbufs as u64,
                mmap_len: mmap_len as u64,
                cpu: 0,
                global: false,
                overwrite,
            },
            subbuf_size,
            n_subbufs,
            // 6.12 does not zero buffer pages; stale bytes make bugs show.
            mem: vec![0xa5; mmap_len],
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
        };
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
        self.mem[start..start + length].copy_from_slice(record);
        self.offset += length;
        true
    }

    /// `relay_switch_subbuf()`.
    fn switch_subbuf(&mut self, length: usize) -> usize {
        if length > self.subbuf_size {
            self.lost_toobig += 1;
            return 0;
        }
        let mut old = None;
        if self.offset != self.subbuf_size + 1 {
            self.prev_padding = self.subbuf_size - self.offset;
            let old_subbuf = (self.produced % self.n_subbufs as u64) as usize;
            self.padding[old_subbuf] = self.prev_padding;
            self.produced += 1;
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
            self.lost_toobig += 1;
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
            self.mem[at..at + PADDING_HEADER_SIZE]
                .copy_from_slice(&(prev_padding as u32).to_ne_bytes());
        }
        if self.full() {
            if !self.info.overwrite {
                if !self.flushing {
                    self.lost_full += 1;
                }
                return false;
            }
            self.lost_overwritten += 1;
        }
        let _ = new;
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
    }

    /// Queues records that a writer on another CPU adds while the reader
    /// reads a sub-buffer: they are written right after the next
    /// `GET_SUBBUF` answers, so the reader's copy sees what they did.
    pub fn race_before_consume(&mut self, records: Vec<Vec<u8>>) {
        self.racing_writes.extend(records);
    }

    /// Writes the queued racing records now (no `CONSUME` came to run them).
    pub fn finish_races(&mut self) {
        for record in std::mem::take(&mut self.racing_writes) {
            self.write(&record);
        }
    }

    /// Sub-buffers produced so far.
    pub fn produced(&self) -> u64 {
        self.produced
    }
}

impl RelayAbi for ModelBuffer {
    fn info(&self) -> &BufInfo {
        &self.info
    }

    fn state(&mut self) -> Result<BufState> {
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

    fn subbuf(&mut self, seq: u64) -> Result<SubbufLookup> {
        if seq < self.consumed {
            return Err(crate::Error::Corrupt {
                path: "model".into(),
                what: format!("GET_SUBBUF {seq} below consumed {} (EINVAL)", self.consumed),
            });
        }
        if seq >= self.produced {
            return Ok(SubbufLookup::NotReady);
        }
        let n = self.n_subbufs as u64;
        if self.info.overwrite && seq + n < self.produced + 1 {
            return Ok(SubbufLookup::Overwritten);
        }
        let idx = (seq % n) as usize;
        let header = PADDING_HEADER_SIZE;
        let loc = SubbufLoc {
            seq,
            data_offset: (idx * self.subbuf_size + header) as u64,
            data_len: (self.subbuf_size - header - self.padding[idx]) as u64,
            padding: self.padding[idx] as u64,
        };
        // The writer on another CPU goes on while the reader reads.
        self.finish_races();
        Ok(SubbufLookup::Ready(loc))
    }

    fn consume(&mut self, seq: u64, count: u64) -> Result<Consumed> {
        if seq < self.consumed || seq + count > self.produced {
            return Err(crate::Error::Corrupt {
                path: "model".into(),
                what: format!("CONSUME {seq}+{count} outside ready range (EINVAL)"),
            });
        }
        let oldest = (self.produced + 1).saturating_sub(self.n_subbufs as u64);
        let lost = if self.info.overwrite {
            oldest.saturating_sub(seq).min(count)
        } else {
            0
        };
        self.consumed = seq + count;
        Ok(Consumed {
            lost,
            consumed: self.consumed,
        })
    }

    fn flush(&mut self) -> Result<()> {
        self.flush_writer();
        Ok(())
    }

    fn data(&self, loc: &SubbufLoc) -> &[u8] {
        &self.mem[loc.data_offset as usize..(loc.data_offset + loc.data_len) as usize]
    }
}
