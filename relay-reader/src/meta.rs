//! The meta area of a relay buffer (`struct relay_meta` and its slots in
//! `include/uapi/linux/relay.h`), read without system calls.
//!
//! The area is seen as 32-bit atomic words (`&[AtomicU32]`): the kernel's
//! read-only mapping in [`crate::kernel::KernelBuffer`] (the one place that
//! turns mapped memory into such a slice), or the memory of the model's
//! [`MetaImage`]. Every access is an aligned 32-bit load, which Rust allows
//! on read-only memory on every target; a 64-bit field is two of them, as a
//! 32-bit kernel stores it. Such a pair is consistent where the writer
//! updates the field under `seq_lock`; a slot's `seq` is only compared with
//! the number the reader expects, which a torn pair cannot fake. Nothing
//! here is `unsafe`. What the kernel writes is untrusted: the layout is checked once
//! ([`MetaLayout::parse`]) and every slot is bounds-checked before its data
//! location is handed out.

use std::mem::{offset_of, size_of};
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use relay_sys::{self as sys, relay_meta, relay_meta_slot};

use crate::mapped::{BufInfo, BufState, SubbufLoc, SubbufLookup};

/// Bytes of `struct relay_meta` this reader reads: every field up to and
/// including `committed`.
pub const META_FIELDS_LEN: usize = offset_of!(relay_meta, committed) + size_of::<u32>();

pub(crate) const META_LEN: usize = offset_of!(relay_meta, meta_len);
pub(crate) const META_STRUCT_LEN: usize = offset_of!(relay_meta, meta_struct_len);
pub(crate) const VERSION: usize = offset_of!(relay_meta, version);
pub(crate) const SEQ_LOCK: usize = offset_of!(relay_meta, seq_lock);
const CAPS: usize = offset_of!(relay_meta, caps);
const SUBBUF_SIZE: usize = offset_of!(relay_meta, subbuf_size);
pub(crate) const N_SUBBUFS: usize = offset_of!(relay_meta, n_subbufs);
pub(crate) const CPU: usize = offset_of!(relay_meta, cpu);
pub(crate) const FLAGS: usize = offset_of!(relay_meta, flags);
pub(crate) const SLOTS_OFFSET: usize = offset_of!(relay_meta, slots_offset);
pub(crate) const SLOT_LEN: usize = offset_of!(relay_meta, slot_len);
const PRODUCED: usize = offset_of!(relay_meta, produced);
const LOST_FULL: usize = offset_of!(relay_meta, lost_full);
const LOST_TOOBIG: usize = offset_of!(relay_meta, lost_toobig);
const LOST_OVERWRITTEN: usize = offset_of!(relay_meta, lost_overwritten);
const CONSUMED: usize = offset_of!(relay_meta, consumed);
const COMMITTED: usize = offset_of!(relay_meta, committed);

const SLOT_SEQ: usize = offset_of!(relay_meta_slot, seq);
const SLOT_HEADER: usize = offset_of!(relay_meta_slot, header);
const SLOT_PADDING: usize = offset_of!(relay_meta_slot, padding);
const SLOT_LOST_BEFORE: usize = offset_of!(relay_meta_slot, lost_before);

/// 32-bit words of the part of `struct relay_meta` this reader reads.
const FIELD_WORDS: usize = META_FIELDS_LEN / 4;
/// 32-bit words of the part of a slot this reader reads.
const SLOT_WORDS: usize = size_of::<relay_meta_slot>() / 4;

/// `RELAY_BUF_GLOBAL | RELAY_BUF_OVERWRITE`: the flags that must agree with
/// `RELAY_IOC_GET_INFO`'s.
const GEOMETRY_FLAGS: u32 = sys::RELAY_BUF_GLOBAL | sys::RELAY_BUF_OVERWRITE;

/// Failed seq_lock reads spun on before yielding the CPU.
const SPINS: u32 = 64;

/// How long the seq_lock may stay odd or keep changing before the reader
/// gives up: a writer holds it for a few stores, so this takes a stuck
/// kernel, not a busy or a badly scheduled one (a TCG guest stops vCPUs
/// for milliseconds).
const SEQ_LOCK_PATIENCE: Duration = Duration::from_secs(10);

/// The 64-bit field at byte `off` (a multiple of 8): two relaxed 32-bit
/// loads, the lower address first, put together in native byte order.
/// Relaxed: the only atomic loads Rust promises to work on read-only memory
/// (an acquire load is a relaxed one followed by `fence(Acquire)`).
#[inline]
fn load64(words: &[AtomicU32], off: usize) -> u64 {
    debug_assert_eq!(off % 8, 0);
    let first = words[off / 4].load(Ordering::Relaxed).to_ne_bytes();
    let second = words[off / 4 + 1].load(Ordering::Relaxed).to_ne_bytes();
    let mut bytes = [0u8; 8];
    bytes[..4].copy_from_slice(&first);
    bytes[4..].copy_from_slice(&second);
    u64::from_ne_bytes(bytes)
}

/// The 32-bit field at byte `off` (a multiple of 4): one relaxed load.
#[inline]
fn load32(words: &[AtomicU32], off: usize) -> u32 {
    debug_assert_eq!(off % 4, 0);
    words[off / 4].load(Ordering::Relaxed)
}

/// The layout of a meta area, checked against the mapping and the geometry
/// `RELAY_IOC_GET_INFO` gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaLayout {
    /// Offset of slot 0 from the start of the area.
    pub slots_offset: usize,
    /// Bytes per slot.
    pub slot_len: usize,
    /// Slots (= sub-buffers).
    pub n_subbufs: u64,
    /// Bytes per sub-buffer.
    pub subbuf_size: u64,
    /// `RELAY_META_CAP_*`.
    pub caps: u64,
}

impl MetaLayout {
    /// Checks the header of the meta area `words` (the mapped bytes, a
    /// multiple of 8 of them) against `info`. The error says what is wrong.
    pub fn parse(words: &[AtomicU32], info: &BufInfo) -> Result<MetaLayout, String> {
        let mapped = words.len() * 4;
        if mapped < META_FIELDS_LEN {
            return Err(format!(
                "meta area of {mapped} bytes, shorter than the {META_FIELDS_LEN} bytes of \
                 struct relay_meta this reader reads"
            ));
        }
        let load32 = |off| load32(words, off);
        let load64 = |off| load64(words, off);
        let version = load32(VERSION);
        if version != sys::RELAY_META_VERSION {
            return Err(format!(
                "meta area version {version}, this reader knows version {}",
                sys::RELAY_META_VERSION
            ));
        }
        let struct_len = load32(META_STRUCT_LEN) as usize;
        if struct_len < META_FIELDS_LEN {
            return Err(format!(
                "meta area: meta_struct_len {struct_len} is shorter than the {META_FIELDS_LEN} \
                 bytes of struct relay_meta this reader reads"
            ));
        }
        let meta_len = load32(META_LEN) as usize;
        if meta_len > mapped || meta_len < struct_len {
            return Err(format!(
                "meta area: meta_len {meta_len} is not between meta_struct_len {struct_len} and \
                 the {mapped} bytes mapped (GET_INFO's meta_len {})",
                info.meta_len
            ));
        }
        let (subbuf_size, n_subbufs) = (load64(SUBBUF_SIZE), load64(N_SUBBUFS));
        let (cpu, flags) = (load32(CPU), load32(FLAGS) & GEOMETRY_FLAGS);
        let info_flags = if info.global {
            sys::RELAY_BUF_GLOBAL
        } else {
            0
        } | if info.overwrite {
            sys::RELAY_BUF_OVERWRITE
        } else {
            0
        };
        if (subbuf_size, n_subbufs, cpu, flags)
            != (info.subbuf_size, info.n_subbufs, info.cpu, info_flags)
        {
            return Err(format!(
                "meta area geometry ({n_subbufs} x {subbuf_size} bytes, cpu {cpu}, flags \
                 {flags:#x}) differs from GET_INFO's ({} x {} bytes, cpu {}, flags {info_flags:#x})",
                info.n_subbufs, info.subbuf_size, info.cpu
            ));
        }
        let slots_offset = load32(SLOTS_OFFSET) as usize;
        let slot_len = load32(SLOT_LEN) as usize;
        let slots_end = usize::try_from(n_subbufs)
            .ok()
            .and_then(|n| n.checked_mul(slot_len))
            .and_then(|len| len.checked_add(slots_offset));
        if slot_len < size_of::<relay_meta_slot>()
            || slot_len % 8 != 0
            || slots_offset % 8 != 0
            || slots_offset < struct_len
            || slots_end.is_none_or(|end| end > meta_len)
        {
            return Err(format!(
                "meta area: {n_subbufs} slots of {slot_len} bytes at offset {slots_offset} do \
                 not fit between meta_struct_len {struct_len} and meta_len {meta_len} (slots \
                 need {} bytes each, 8-byte aligned)",
                size_of::<relay_meta_slot>()
            ));
        }
        Ok(MetaLayout {
            slots_offset,
            slot_len,
            n_subbufs,
            subbuf_size,
            caps: load64(CAPS),
        })
    }

    /// The ring index of sequence number `seq`.
    #[inline]
    fn index(&self, seq: u64) -> u64 {
        if self.n_subbufs.is_power_of_two() {
            seq & (self.n_subbufs - 1)
        } else {
            seq % self.n_subbufs
        }
    }

    /// The fields `read_state` and `lookup` read, as a fixed-size view:
    /// one bounds check here instead of one per field. `parse` checked that
    /// the area is this long; a shorter `words` (not the area `parse` saw)
    /// panics as an index out of range would.
    #[inline(always)]
    fn fields(words: &[AtomicU32]) -> &[AtomicU32; FIELD_WORDS] {
        words
            .first_chunk()
            .expect("the meta area holds struct relay_meta (checked in parse)")
    }

    /// The slot of the sub-buffer at ring index `index` (its sequence number
    /// modulo n_subbufs), as a fixed-size view.
    #[inline(always)]
    fn slot<'w>(&self, words: &'w [AtomicU32], index: u64) -> &'w [AtomicU32; SLOT_WORDS] {
        // In range: slot indices are below n_subbufs, checked in `parse`.
        let start = (self.slots_offset + index as usize * self.slot_len) / 4;
        words
            .get(start..)
            .and_then(<[AtomicU32]>::first_chunk)
            .expect("the slots lie in the meta area (checked in parse)")
    }

    /// Runs `read` under the seq_lock protocol of `struct relay_meta`:
    /// load `seq_lock` with acquire semantics (relaxed load, acquire fence),
    /// retry while it is odd, `read` the fields (relaxed), read barrier
    /// (acquire fence), retry if `seq_lock` changed. Returns what `read`
    /// returned and how many retries it took. The first pass is inlined
    /// (the reader takes it once per sub-buffer); retries, which spin a
    /// little and then yield, are not.
    #[inline(always)]
    fn seq_read<T>(
        fields: &[AtomicU32; FIELD_WORDS],
        read: impl Fn(&[AtomicU32; FIELD_WORDS]) -> T,
    ) -> Result<(T, u32), String> {
        match Self::seq_pass(fields, &read) {
            Ok(value) => Ok((value, 0)),
            Err(seq) => Self::seq_retry(fields, read, seq),
        }
    }

    /// One pass of [`seq_read`](Self::seq_read): what `read` returned, or
    /// the `seq_lock` value that made the pass fail.
    #[inline(always)]
    fn seq_pass<T>(
        fields: &[AtomicU32; FIELD_WORDS],
        read: &impl Fn(&[AtomicU32; FIELD_WORDS]) -> T,
    ) -> Result<T, u32> {
        let seq = load32(fields, SEQ_LOCK);
        fence(Ordering::Acquire);
        if seq % 2 != 0 {
            return Err(seq);
        }
        let value = read(fields);
        fence(Ordering::Acquire);
        if load32(fields, SEQ_LOCK) == seq {
            Ok(value)
        } else {
            Err(seq)
        }
    }

    /// The retries of [`seq_read`](Self::seq_read) after a failed first
    /// pass: spin a little, then yield between passes, and give up after
    /// `SEQ_LOCK_PATIENCE`.
    #[cold]
    #[inline(never)]
    fn seq_retry<T>(
        fields: &[AtomicU32; FIELD_WORDS],
        read: impl Fn(&[AtomicU32; FIELD_WORDS]) -> T,
        mut last: u32,
    ) -> Result<(T, u32), String> {
        let mut retries = 1u32;
        let mut since: Option<Instant> = None;
        loop {
            if retries % SPINS != 0 {
                std::hint::spin_loop();
            } else {
                let since = *since.get_or_insert_with(Instant::now);
                if since.elapsed() > SEQ_LOCK_PATIENCE {
                    return Err(format!(
                        "meta area: seq_lock stayed odd or kept changing for \
                         {SEQ_LOCK_PATIENCE:?} (last {last})"
                    ));
                }
                std::thread::yield_now();
            }
            match Self::seq_pass(fields, &read) {
                Ok(value) => return Ok((value, retries)),
                Err(seq) => last = seq,
            }
            retries = retries.wrapping_add(1);
        }
    }

    /// The counters, read with the seq_lock protocol (see `seq_read`), and
    /// how many retries that took. `write_offset` is the committed count of
    /// the sub-buffer being written, read in the same section, so that it
    /// belongs to the produced count read with it.
    #[inline(always)]
    pub fn read_state(&self, words: &[AtomicU32]) -> Result<(BufState, u32), String> {
        let fields = Self::fields(words);
        // FINALIZED is stored with release after the last update of
        // produced: seen here, the produced count read below is the last.
        let flags = load32(fields, FLAGS);
        // Loaded before produced, so that it cannot be above it unless the
        // kernel is wrong.
        let consumed = load64(fields, CONSUMED);
        // Acquire for both loads above.
        fence(Ordering::Acquire);
        let ((produced, lost_full, lost_toobig, lost_overwritten, committed), retries) =
            Self::seq_read(fields, |fields| {
                (
                    load64(fields, PRODUCED),
                    load64(fields, LOST_FULL),
                    load64(fields, LOST_TOOBIG),
                    load64(fields, LOST_OVERWRITTEN),
                    load32(fields, COMMITTED),
                )
            })?;
        if consumed > produced {
            return Err(format!(
                "meta area: consumed {consumed} > produced {produced}"
            ));
        }
        let state = BufState {
            produced,
            consumed,
            write_offset: u64::from(committed).min(self.subbuf_size),
            lost_full,
            lost_toobig,
            lost_overwritten,
            finalized: flags & sys::RELAY_BUF_FINALIZED != 0,
        };
        Ok((state, retries))
    }

    /// Where the data of the sub-buffer `seq` lies, from its slot: not ready
    /// at or above the produced count; else the slot holds a later sequence
    /// number (overwritten), an earlier one or none (not ready), or `seq`
    /// with a header and padding that must fit the sub-buffer. In overwrite
    /// mode the answer holds only if [`still_holds`](Self::still_holds) says
    /// so after the data was copied.
    ///
    /// The produced count is read again for every look-up, although the
    /// reader read it when it looked at the counters: the kernel claims a
    /// slot (stores its sequence number) when it starts the sub-buffer, so a
    /// slot holding `seq` is complete only below the produced count, and
    /// after a `relay_reset()` since that look the count went back while
    /// the writer may be filling `seq`'s slot again.
    #[inline(always)]
    pub fn lookup(&self, words: &[AtomicU32], seq: u64) -> Result<SubbufLookup, String> {
        let fields = Self::fields(words);
        let (produced, _) = Self::seq_read(fields, |fields| load64(fields, PRODUCED))?;
        if seq >= produced {
            return Ok(SubbufLookup::NotReady);
        }
        // One division per look-up (none for a power-of-two ring): the slot
        // and the data share the index.
        let index = self.index(seq);
        let slot = self.slot(words, index);
        let held = load64(slot, SLOT_SEQ);
        // Acquire: the slot's other fields (and the data) are read after.
        fence(Ordering::Acquire);
        if held != seq {
            return Ok(Self::held_by_another(held, seq));
        }
        let header = u64::from(load32(slot, SLOT_HEADER));
        let padding = u64::from(load32(slot, SLOT_PADDING));
        let lost_before = load64(slot, SLOT_LOST_BEFORE);
        if header + padding > self.subbuf_size {
            return self.misfit(slot, seq, header, padding);
        }
        Ok(SubbufLookup::Ready(SubbufLoc {
            seq,
            data_offset: index * self.subbuf_size + header,
            data_len: self.subbuf_size - header - padding,
            padding,
            lost_before,
        }))
    }

    /// What a slot holding `held` instead of `seq` (below the produced
    /// count) says: a later one, overwritten; none or an earlier one, not
    /// ready (a `relay_reset()` since the look at the counters). Rare
    /// below the produced count (a reader finds laps by the counters), so
    /// out of the look-up's line.
    #[cold]
    #[inline(never)]
    fn held_by_another(held: u64, seq: u64) -> SubbufLookup {
        if held == sys::RELAY_META_SLOT_EMPTY || held < seq {
            SubbufLookup::NotReady
        } else {
            SubbufLookup::Overwritten
        }
    }

    /// A slot whose header and padding do not fit the sub-buffer: torn by
    /// a writer that reused the slot meanwhile (only values of the
    /// sub-buffer the slot still holds are wrong), or corrupt.
    #[cold]
    #[inline(never)]
    fn misfit(
        &self,
        slot: &[AtomicU32; SLOT_WORDS],
        seq: u64,
        header: u64,
        padding: u64,
    ) -> Result<SubbufLookup, String> {
        fence(Ordering::Acquire);
        if load64(slot, SLOT_SEQ) != seq {
            return Ok(SubbufLookup::Overwritten);
        }
        Err(format!(
            "meta slot of sub-buffer {seq}: header {header} + padding {padding} exceed the \
             sub-buffer size {}",
            self.subbuf_size
        ))
    }

    /// After a copy of `loc`'s data: a read barrier, then whether its slot
    /// still holds `loc.seq`, i.e. whether the copy is intact.
    #[inline]
    pub fn still_holds(&self, words: &[AtomicU32], loc: &SubbufLoc) -> bool {
        fence(Ordering::Acquire);
        load64(self.slot(words, self.index(loc.seq)), SLOT_SEQ) == loc.seq
    }
}

/// A meta area in ordinary memory, written the way the kernel writes it:
/// the model's (and the tests') stand-in for the mapped one.
#[derive(Debug)]
pub struct MetaImage {
    words: Box<[AtomicU32]>,
}

impl Clone for MetaImage {
    fn clone(&self) -> Self {
        MetaImage {
            words: self
                .words
                .iter()
                .map(|w| AtomicU32::new(w.load(Ordering::Relaxed)))
                .collect(),
        }
    }
}

/// Bytes of the meta area the model lays out for `n_subbufs` slots: the
/// structure, then the slots, rounded up to a page as the kernel maps it.
pub fn image_len(n_subbufs: u64) -> u64 {
    (size_of::<relay_meta>() as u64 + n_subbufs * size_of::<relay_meta_slot>() as u64)
        .next_multiple_of(4096)
}

impl MetaImage {
    /// A valid meta area for `info` (whose `meta_len` it fills), every slot
    /// empty.
    pub fn new(info: &BufInfo) -> MetaImage {
        let len = image_len(info.n_subbufs);
        let image = MetaImage {
            words: (0..len / 4).map(|_| AtomicU32::new(0)).collect(),
        };
        image.set32(META_LEN, len as u32);
        image.set32(META_STRUCT_LEN, size_of::<relay_meta>() as u32);
        image.set32(VERSION, sys::RELAY_META_VERSION);
        image.set64(CAPS, sys::RELAY_META_CAP_FLUSH);
        image.set64(SUBBUF_SIZE, info.subbuf_size);
        image.set64(N_SUBBUFS, info.n_subbufs);
        image.set32(CPU, info.cpu);
        let flags = if info.global {
            sys::RELAY_BUF_GLOBAL
        } else {
            0
        } | if info.overwrite {
            sys::RELAY_BUF_OVERWRITE
        } else {
            0
        };
        image.set32(FLAGS, flags);
        image.set32(SLOTS_OFFSET, size_of::<relay_meta>() as u32);
        image.set32(SLOT_LEN, size_of::<relay_meta_slot>() as u32);
        for i in 0..info.n_subbufs {
            image.set64(image.slot_at(i) + SLOT_SEQ, sys::RELAY_META_SLOT_EMPTY);
        }
        image
    }

    /// The words, as a reader sees them.
    pub fn words(&self) -> &[AtomicU32] {
        &self.words
    }

    /// The image as bytes (native byte order), for writing it to a file.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.words
            .iter()
            .flat_map(|w| w.load(Ordering::Relaxed).to_ne_bytes())
            .collect()
    }

    fn slot_at(&self, index: u64) -> usize {
        size_of::<relay_meta>() + index as usize * size_of::<relay_meta_slot>()
    }

    /// Stores the 64-bit field at byte `off` in two halves, as a 32-bit
    /// kernel does, each with release semantics.
    pub fn set64(&self, off: usize, value: u64) {
        let bytes = value.to_ne_bytes();
        let half = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        self.words[off / 4].store(half(0), Ordering::Release);
        self.words[off / 4 + 1].store(half(4), Ordering::Release);
    }

    /// Stores the 32-bit field at byte `off` with release semantics.
    pub fn set32(&self, off: usize, value: u32) {
        self.words[off / 4].store(value, Ordering::Release);
    }

    fn seq_lock(&self) -> u32 {
        load32(&self.words, SEQ_LOCK)
    }

    /// The writer's update of the fields it owns, under the seq_lock.
    pub fn publish(&self, produced: u64, lost_full: u64, lost_toobig: u64, lost_overwritten: u64) {
        self.set32(SEQ_LOCK, self.seq_lock().wrapping_add(1));
        fence(Ordering::Release);
        self.set64(PRODUCED, produced);
        self.set64(LOST_FULL, lost_full);
        self.set64(LOST_TOOBIG, lost_toobig);
        self.set64(LOST_OVERWRITTEN, lost_overwritten);
        self.set32(SEQ_LOCK, self.seq_lock().wrapping_add(1));
    }

    /// `committed`, stored by the writer after the bytes below it.
    pub fn set_committed(&self, committed: u32) {
        self.set32(COMMITTED, committed);
    }

    /// `consumed`, stored by whoever consumes.
    pub fn set_consumed(&self, consumed: u64) {
        self.set64(CONSUMED, consumed);
    }

    /// Sets `RELAY_BUF_FINALIZED` (release, after the last `publish`).
    pub fn finalize(&self) {
        let flags = load32(&self.words, FLAGS);
        self.set32(FLAGS, flags | sys::RELAY_BUF_FINALIZED);
    }

    /// The writer starts sub-buffer `seq` in its slot: the sequence number
    /// first, then the rest (padding 0 until it is finished).
    pub fn start_slot(&self, seq: u64, n_subbufs: u64, header: u32, lost_before: u64) {
        let slot = self.slot_at(seq % n_subbufs);
        self.set64(slot + SLOT_SEQ, seq);
        fence(Ordering::SeqCst);
        self.set32(slot + SLOT_HEADER, header);
        self.set32(slot + SLOT_PADDING, 0);
        self.set64(slot + SLOT_LOST_BEFORE, lost_before);
    }

    /// The writer finishes sub-buffer `seq`, leaving `padding` bytes unused.
    pub fn finish_slot(&self, seq: u64, n_subbufs: u64, padding: u32) {
        self.set32(self.slot_at(seq % n_subbufs) + SLOT_PADDING, padding);
    }

    /// Raw access for tests that break the image on purpose.
    #[cfg(test)]
    pub(crate) fn poke32(&self, off: usize, value: u32) {
        self.set32(off, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(overwrite: bool) -> BufInfo {
        BufInfo {
            subbuf_size: 256,
            n_subbufs: 4,
            mmap_len: 4096,
            cpu: 1,
            global: false,
            overwrite,
            meta_len: image_len(4),
        }
    }

    #[test]
    fn a_valid_image_parses() {
        let info = info(true);
        let image = MetaImage::new(&info);
        let layout = MetaLayout::parse(image.words(), &info).unwrap();
        assert_eq!(layout.n_subbufs, 4);
        assert_eq!(layout.caps, sys::RELAY_META_CAP_FLUSH);
        assert_eq!(
            layout.lookup(image.words(), 0).unwrap(),
            SubbufLookup::NotReady
        );
    }

    #[test]
    fn corrupt_headers_are_rejected_with_what_is_wrong() {
        let info = info(false);
        let cases: [(usize, u32, &str); 9] = [
            (VERSION, 2, "version 2"),
            (META_STRUCT_LEN, 56, "meta_struct_len 56"),
            (META_LEN, 1 << 20, "meta_len 1048576"),
            (N_SUBBUFS, 5, "differs from GET_INFO"),
            (CPU, 0, "differs from GET_INFO"),
            (FLAGS, sys::RELAY_BUF_OVERWRITE, "differs from GET_INFO"),
            (SLOT_LEN, 20, "slots of 20 bytes"),
            (SLOTS_OFFSET, 4090, "at offset 4090"),
            (SLOTS_OFFSET, 8, "at offset 8"),
        ];
        for (off, value, expect) in cases {
            let image = MetaImage::new(&info);
            image.poke32(off, value);
            let err = MetaLayout::parse(image.words(), &info).unwrap_err();
            assert!(err.contains(expect), "{off} = {value}: {err}");
        }
        // Shorter than the structure.
        let image = MetaImage::new(&info);
        let err = MetaLayout::parse(&image.words()[..8], &info).unwrap_err();
        assert!(err.contains("shorter than"), "{err}");
        // Geometry of another buffer.
        let image = MetaImage::new(&info);
        let other = BufInfo {
            subbuf_size: 512,
            ..info
        };
        assert!(MetaLayout::parse(image.words(), &other)
            .unwrap_err()
            .contains("geometry"));
    }

    #[test]
    fn corrupt_slot_is_an_error_unless_the_slot_moved_on() {
        let info = info(true);
        let image = MetaImage::new(&info);
        let layout = MetaLayout::parse(image.words(), &info).unwrap();
        image.start_slot(1, 4, 200, 0);
        image.finish_slot(1, 4, 100);
        image.publish(2, 0, 0, 0);
        let err = layout.lookup(image.words(), 1).unwrap_err();
        assert!(err.contains("header 200 + padding 100"), "{err}");
        image.start_slot(5, 4, 4, 3);
        image.publish(6, 0, 0, 0);
        assert_eq!(
            layout.lookup(image.words(), 1).unwrap(),
            SubbufLookup::Overwritten
        );
        // Never started (empty), and not produced yet.
        assert_eq!(
            layout.lookup(image.words(), 2).unwrap(),
            SubbufLookup::NotReady
        );
        assert_eq!(
            layout.lookup(image.words(), 9).unwrap(),
            SubbufLookup::NotReady
        );
        image.finish_slot(5, 4, 12);
        image.publish(7, 0, 0, 0);
        let SubbufLookup::Ready(loc) = layout.lookup(image.words(), 5).unwrap() else {
            panic!("sub-buffer 5 is ready");
        };
        assert_eq!(
            (loc.data_offset, loc.data_len, loc.padding, loc.lost_before),
            (256 + 4, 256 - 4 - 12, 12, 3)
        );
        assert!(layout.still_holds(image.words(), &loc));
        image.start_slot(9, 4, 4, 0);
        assert!(!layout.still_holds(image.words(), &loc));
    }

    #[test]
    fn seq_lock_odd_is_waited_out() {
        let info = info(false);
        let image = MetaImage::new(&info);
        let layout = MetaLayout::parse(image.words(), &info).unwrap();
        image.publish(3, 1, 0, 0);
        // A writer in the middle of an update: odd, fields half stored.
        image.set32(SEQ_LOCK, 5);
        image.set64(PRODUCED, 7);
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                image.set64(LOST_FULL, 2);
                image.set32(SEQ_LOCK, 6);
            });
            let (state, retries) = layout.read_state(image.words()).unwrap();
            assert!(retries > 0, "an odd seq_lock was not retried");
            assert_eq!((state.produced, state.lost_full), (7, 2));
        });
    }

    #[test]
    fn seq_lock_readers_never_see_a_torn_update() {
        let info = info(false);
        let image = MetaImage::new(&info);
        let layout = MetaLayout::parse(image.words(), &info).unwrap();
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                for k in 1..=20_000 {
                    image.publish(k, k, k, k);
                }
                done.store(true, Ordering::Release);
            });
            let mut last = 0;
            while !done.load(Ordering::Acquire) {
                let (st, _) = layout.read_state(image.words()).unwrap();
                let k = st.produced;
                assert_eq!(
                    (st.lost_full, st.lost_toobig, st.lost_overwritten),
                    (k, k, k),
                    "torn read"
                );
                assert!(k >= last);
                last = k;
            }
        });
    }

    #[test]
    fn consumed_above_produced_is_an_error() {
        let info = info(false);
        let image = MetaImage::new(&info);
        let layout = MetaLayout::parse(image.words(), &info).unwrap();
        image.publish(2, 0, 0, 0);
        image.set_consumed(3);
        assert!(layout
            .read_state(image.words())
            .unwrap_err()
            .contains("consumed 3 > produced 2"));
    }
}
