//! The relay user ABI (`<uapi/linux/relay.h>`) with raw system calls and raw
//! loads from the mapping: every ioctl with good and bad arguments, the
//! mapping shapes through debugfs, the meta area (its header, the seq_lock
//! protocol, the counters and the slots), zeroed buffer pages, the loss
//! counters in both modes, finalized buffers.
//!
//! The meta area is read here on its own terms, independently of
//! relay-reader: aligned 32-bit relaxed loads from the mapping, a 64-bit
//! field being two of them, and acquire fences, as `relay.h` describes.
//!
//! On a stock kernel the ioctls and the meta area come from the `relay_app`
//! sample module; on a kernel built from `kernel-patches/series/` (it has
//! `relay_flush_buf`) from the relay core, and blktrace's files become
//! mappable too. The expectations are the same, except where a test says
//! otherwise.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::fs::File;
use std::io::Read;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, RawFd};
use std::process::Command;
use std::sync::atomic::{fence, AtomicU32, Ordering};

use relay_readtest_event::Event;
use relay_sys::blktrace::{
    blk_user_trace_setup, BLKTRACESETUP, BLKTRACESTART, BLKTRACESTOP, BLKTRACETEARDOWN,
};
use relay_sys::{
    ioc, nr, relay_buf_info, relay_consume, relay_meta, relay_meta_slot, IOC_READ, IOC_WRITE,
    RELAY_BUF_FINALIZED, RELAY_BUF_GLOBAL, RELAY_BUF_OVERWRITE, RELAY_IOC_CONSUME, RELAY_IOC_FLUSH,
    RELAY_IOC_GET_INFO, RELAY_IOC_MAGIC, RELAY_META_CAP_FLUSH, RELAY_META_SLOT_EMPTY,
    RELAY_META_VERSION,
};
use relay_vm_tests::{
    generate_klog, in_vm, klog_gen_records, online_cpus, patched_kernel, write_control, Modules,
};

const DIR: &str = "/sys/kernel/debug/relay_klog";
/// The relay_app header at the start of every sub-buffer: its padding.
const HDR: u64 = 4;
/// Bytes `RELAY_IOC_GET_INFO` fills: `struct relay_buf_info` with `meta_len`.
const INFO_LEN: usize = size_of::<relay_buf_info>();
/// `struct relay_buf_info` without `meta_len`: smaller than the first
/// published structure.
const INFO_LEN_SHORT: usize = 32;
/// Bytes `RELAY_IOC_CONSUME` fills.
const CONSUME_LEN: usize = size_of::<relay_consume>();

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn errno_name(e: i32) -> String {
    format!("{e} ({})", std::io::Error::from_raw_os_error(e))
}

/// ioctl(2) with a raw request number: `Ok` with what it returned (the
/// relay ioctls return the number of bytes they filled), `Err(errno)` on
/// failure.
fn ioctl(fd: RawFd, req: u32, arg: *mut c_void) -> Result<i32, i32> {
    // SAFETY: the relay ioctls read and write at most _IOC_SIZE(req) bytes at
    // `arg`; every caller passes a pointer to at least that many bytes (or
    // null/garbage on purpose where the test expects EFAULT).
    let ret = unsafe { libc::ioctl(fd, req as libc::Ioctl, arg) };
    if ret < 0 {
        Err(errno())
    } else {
        Ok(ret)
    }
}

/// Expects `ioctl` to fail with `want`.
fn expect_errno(fd: RawFd, req: u32, arg: *mut c_void, want: i32, what: &str) {
    match ioctl(fd, req, arg) {
        Ok(ret) => panic!("{what}: succeeded ({ret}), expected {}", errno_name(want)),
        Err(e) => assert_eq!(
            e,
            want,
            "{what}: failed with {}, expected {}",
            errno_name(e),
            errno_name(want)
        ),
    }
}

/// `RELAY_IOC_GET_INFO`, which must fill the whole structure.
fn get_info(fd: RawFd, name: &str) -> relay_buf_info {
    let mut info = relay_buf_info::default();
    let ret = ioctl(fd, RELAY_IOC_GET_INFO, (&raw mut info).cast())
        .unwrap_or_else(|e| panic!("{name}: GET_INFO: {}", errno_name(e)));
    assert_eq!(
        ret as usize, INFO_LEN,
        "{name}: GET_INFO returns the bytes it filled"
    );
    info
}

/// The fields of `struct relay_buf_info` in its first bytes.
fn info_from_bytes(bytes: &[u8]) -> relay_buf_info {
    let u64_at = |off: usize| u64::from_ne_bytes(bytes[off..off + 8].try_into().expect("8"));
    let u32_at = |off: usize| u32::from_ne_bytes(bytes[off..off + 4].try_into().expect("4"));
    relay_buf_info {
        subbuf_size: u64_at(offset_of!(relay_buf_info, subbuf_size)),
        n_subbufs: u64_at(offset_of!(relay_buf_info, n_subbufs)),
        mmap_len: u64_at(offset_of!(relay_buf_info, mmap_len)),
        cpu: u32_at(offset_of!(relay_buf_info, cpu)),
        flags: u32_at(offset_of!(relay_buf_info, flags)),
        meta_len: u64_at(offset_of!(relay_buf_info, meta_len)),
    }
}

/// The counters of a meta area, read together under its seq_lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    produced: u64,
    consumed: u64,
    lost_full: u64,
    lost_toobig: u64,
    lost_overwritten: u64,
    /// Bytes of sub-buffer `produced` (the one being written) finished.
    committed: u32,
    flags: u32,
}

/// One `struct relay_meta_slot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    seq: u64,
    header: u32,
    padding: u32,
    lost_before: u64,
}

/// A meta area in a mapping, read with aligned 32-bit relaxed loads (the
/// loads Rust allows on read-only memory) and acquire fences: a 64-bit
/// field is two loads, as on a 32-bit reader.
#[derive(Clone, Copy)]
struct Meta<'a> {
    words: &'a [AtomicU32],
}

impl<'a> Meta<'a> {
    /// The meta area that starts `offset` bytes into `map`.
    fn at(map: &'a Mapping, offset: usize) -> Meta<'a> {
        Meta {
            words: map.words(offset),
        }
    }

    fn word(&self, off: usize) -> &'a AtomicU32 {
        assert_eq!(off % 4, 0, "meta offset {off} is not 32-bit aligned");
        self.words.get(off / 4).unwrap_or_else(|| {
            panic!(
                "meta offset {off} beyond the {} bytes mapped",
                self.words.len() * 4
            )
        })
    }

    fn u32(&self, off: usize) -> u32 {
        self.word(off).load(Ordering::Relaxed)
    }

    /// The 64-bit field at `off` from its two halves, high, low, high
    /// again, retried while the high half changes under the reader.
    fn u64(&self, off: usize) -> u64 {
        let (lo, hi) = if cfg!(target_endian = "little") {
            (off, off + 4)
        } else {
            (off + 4, off)
        };
        loop {
            let h = self.u32(hi);
            fence(Ordering::Acquire);
            let l = self.u32(lo);
            fence(Ordering::Acquire);
            if self.u32(hi) == h {
                return (u64::from(h) << 32) | u64::from(l);
            }
        }
    }

    fn meta_len(&self) -> u32 {
        self.u32(offset_of!(relay_meta, meta_len))
    }

    fn meta_struct_len(&self) -> u32 {
        self.u32(offset_of!(relay_meta, meta_struct_len))
    }

    fn version(&self) -> u32 {
        self.u32(offset_of!(relay_meta, version))
    }

    fn seq_lock(&self) -> u32 {
        self.u32(offset_of!(relay_meta, seq_lock))
    }

    fn caps(&self) -> u64 {
        self.u64(offset_of!(relay_meta, caps))
    }

    fn subbuf_size(&self) -> u64 {
        self.u64(offset_of!(relay_meta, subbuf_size))
    }

    fn n_subbufs(&self) -> u64 {
        self.u64(offset_of!(relay_meta, n_subbufs))
    }

    fn cpu(&self) -> u32 {
        self.u32(offset_of!(relay_meta, cpu))
    }

    /// `flags`, loaded with acquire semantics.
    fn flags(&self) -> u32 {
        let flags = self.u32(offset_of!(relay_meta, flags));
        fence(Ordering::Acquire);
        flags
    }

    fn slots_offset(&self) -> u32 {
        self.u32(offset_of!(relay_meta, slots_offset))
    }

    fn slot_len(&self) -> u32 {
        self.u32(offset_of!(relay_meta, slot_len))
    }

    fn reserved(&self) -> u32 {
        self.u32(offset_of!(relay_meta, reserved))
    }

    /// The counters with the seq_lock protocol of `relay.h`: flags with
    /// acquire semantics first (FINALIZED comes after the last produced);
    /// then load seq_lock with acquire semantics, retry while it is odd,
    /// load the counters, committed with acquire semantics, read barrier,
    /// retry if seq_lock changed. consumed after that, on its own.
    fn state(&self) -> State {
        let flags = self.flags();
        let lock = offset_of!(relay_meta, seq_lock);
        let started = std::time::Instant::now();
        loop {
            let seq = self.u32(lock);
            fence(Ordering::Acquire);
            if seq.is_multiple_of(2) {
                let produced = self.u64(offset_of!(relay_meta, produced));
                let lost_full = self.u64(offset_of!(relay_meta, lost_full));
                let lost_toobig = self.u64(offset_of!(relay_meta, lost_toobig));
                let lost_overwritten = self.u64(offset_of!(relay_meta, lost_overwritten));
                let committed = self.u32(offset_of!(relay_meta, committed));
                fence(Ordering::Acquire);
                if self.u32(lock) == seq {
                    return State {
                        produced,
                        consumed: self.u64(offset_of!(relay_meta, consumed)),
                        lost_full,
                        lost_toobig,
                        lost_overwritten,
                        committed,
                        flags,
                    };
                }
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "seq_lock stayed odd or kept changing for 30 s (last {seq})"
            );
            std::thread::yield_now();
        }
    }

    /// Byte offset of slot `idx`.
    fn slot_off(&self, idx: u64) -> usize {
        let n = self.n_subbufs();
        assert!(idx < n, "slot {idx} of {n}");
        self.slots_offset() as usize + idx as usize * self.slot_len() as usize
    }

    /// The sequence number slot `idx` holds.
    fn slot_seq(&self, idx: u64) -> u64 {
        self.u64(self.slot_off(idx) + offset_of!(relay_meta_slot, seq))
    }

    /// Slot `idx`: its seq, then (acquire) the rest.
    fn slot(&self, idx: u64) -> Slot {
        let off = self.slot_off(idx);
        let seq = self.slot_seq(idx);
        fence(Ordering::Acquire);
        Slot {
            seq,
            header: self.u32(off + offset_of!(relay_meta_slot, header)),
            padding: self.u32(off + offset_of!(relay_meta_slot, padding)),
            lost_before: self.u64(off + offset_of!(relay_meta_slot, lost_before)),
        }
    }
}

/// An open buffer file, mapped with its meta area (offset 0, mmap_len +
/// meta_len bytes) as a reader maps it.
struct Buf {
    file: File,
    name: String,
    /// GET_INFO when the file was opened.
    info: relay_buf_info,
    map: Mapping,
}

impl Buf {
    fn open(path: &str) -> Buf {
        let file = File::open(path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
        let info = get_info(file.as_raw_fd(), path);
        assert!(info.meta_len > 0, "{path}: GET_INFO reports no meta area");
        let len = (info.mmap_len + info.meta_len) as usize;
        let map = Mapping::new(file.as_raw_fd(), len, libc::PROT_READ).unwrap_or_else(|e| {
            panic!(
                "{path}: mmap of the buffer and its meta area: {}",
                errno_name(e)
            )
        });
        Buf {
            file,
            name: path.to_string(),
            info,
            map,
        }
    }

    fn cpu(cpu: u32) -> Buf {
        Buf::open(&format!("{DIR}/cpu{cpu}"))
    }

    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// GET_INFO now.
    fn info(&self) -> relay_buf_info {
        get_info(self.fd(), &self.name)
    }

    fn meta(&self) -> Meta<'_> {
        Meta::at(&self.map, self.info.mmap_len as usize)
    }

    /// The buffer's part of the mapping.
    fn bytes(&self) -> &[u8] {
        &self.map.bytes()[..self.info.mmap_len as usize]
    }

    fn state(&self) -> State {
        self.meta().state()
    }

    /// The slot sub-buffer `seq` lives in.
    fn slot_of(&self, seq: u64) -> Slot {
        self.meta().slot(seq % self.info.n_subbufs)
    }

    /// CONSUME; on success it must have filled the whole structure.
    fn consume(&self, seq: u64, count: u64) -> Result<relay_consume, i32> {
        let mut c = relay_consume {
            seq,
            count,
            ..Default::default()
        };
        let ret = ioctl(self.fd(), RELAY_IOC_CONSUME, (&raw mut c).cast())?;
        assert_eq!(
            ret as usize, CONSUME_LEN,
            "{}: CONSUME {seq} {count} returns the bytes it filled",
            self.name
        );
        Ok(c)
    }

    /// The consumed count, as CONSUME with a count of 0 returns it.
    fn consumed(&self) -> u64 {
        let c = self.consume(u64::MAX, 0).unwrap_or_else(|e| {
            panic!(
                "{}: CONSUME of nothing (count 0): {}",
                self.name,
                errno_name(e)
            )
        });
        assert_eq!(
            c.lost, 0,
            "{}: CONSUME of nothing lost something",
            self.name
        );
        c.consumed
    }

    fn flush(&self) {
        ioctl(self.fd(), RELAY_IOC_FLUSH, std::ptr::null_mut())
            .unwrap_or_else(|e| panic!("{}: FLUSH: {}", self.name, errno_name(e)));
    }
}

/// A shared mapping of a buffer file, unmapped on drop.
struct Mapping {
    addr: *mut c_void,
    len: usize,
}

impl Mapping {
    fn new(fd: RawFd, len: usize, prot: i32) -> Result<Mapping, i32> {
        Mapping::at(fd, len, prot, 0)
    }

    fn at(fd: RawFd, len: usize, prot: i32, offset: libc::off_t) -> Result<Mapping, i32> {
        // SAFETY: a fresh shared mapping chosen by the kernel; nothing else
        // refers to that address range.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd,
                offset,
            )
        };
        if addr == libc::MAP_FAILED {
            Err(errno())
        } else {
            Ok(Mapping { addr, len })
        }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes and lives as long as
        // `self`; the kernel may change them meanwhile, which the tests
        // account for (they read data only while it is not being written).
        unsafe { std::slice::from_raw_parts(self.addr.cast::<u8>(), self.len) }
    }

    /// The mapping from byte `offset` on as 32-bit words, for the meta area.
    fn words(&self, offset: usize) -> &[AtomicU32] {
        assert!(
            offset.is_multiple_of(4) && offset <= self.len,
            "words at {offset}"
        );
        // SAFETY: the range is inside the mapping (page-aligned, so the
        // words are aligned), which lives as long as `self`. The kernel
        // changes the words meanwhile, which atomics allow; they are only
        // loaded, with relaxed loads, which work on read-only memory.
        unsafe {
            std::slice::from_raw_parts(
                self.addr.cast::<u8>().add(offset).cast::<AtomicU32>(),
                (self.len - offset) / 4,
            )
        }
    }

    /// mprotect(2) of the whole mapping; `Err(errno)` on failure.
    fn protect(&self, prot: i32) -> Result<(), i32> {
        // SAFETY: the range is this mapping, still mapped; no reference into
        // it is live across a change of its protection (the tests only ask
        // for more access, which must be refused).
        let ret = unsafe { libc::mprotect(self.addr, self.len, prot) };
        if ret < 0 {
            Err(errno())
        } else {
            Ok(())
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the range mmap returned, once.
        unsafe {
            libc::munmap(self.addr, self.len);
        }
    }
}

fn u32_at(bytes: &[u8], off: u64) -> u32 {
    let off = off as usize;
    u32::from_ne_bytes(bytes[off..off + 4].try_into().expect("4 bytes"))
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no memory effects.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}

/// The klog_gen record `seq` of `cpu`, as klog_printk() writes it.
fn record(cpu: u32, seq: u64) -> String {
    format!("klog_gen cpu={cpu} seq={seq}\n")
}

/// What the first `n` records of `cpu` add to a sub-buffer's committed count.
fn records_len(cpu: u32, n: u64) -> u64 {
    (0..n).map(|seq| record(cpu, seq).len() as u64).sum()
}

/// Checks the header of `buf`'s meta area against GET_INFO and `relay.h`.
fn check_meta_header(buf: &Buf) {
    let (name, info, meta) = (&buf.name, &buf.info, buf.meta());
    assert_eq!(meta.version(), RELAY_META_VERSION, "{name}: meta version");
    assert!(
        meta.meta_struct_len() as usize >= size_of::<relay_meta>(),
        "{name}: meta_struct_len {} < struct relay_meta ({} bytes)",
        meta.meta_struct_len(),
        size_of::<relay_meta>()
    );
    assert_eq!(
        u64::from(meta.meta_len()),
        info.meta_len,
        "{name}: the meta area's meta_len and GET_INFO's"
    );
    assert_eq!(
        info.meta_len % page_size(),
        0,
        "{name}: meta_len {} is whole pages",
        info.meta_len
    );
    let (slots_offset, slot_len) = (meta.slots_offset(), meta.slot_len());
    assert!(
        slots_offset >= meta.meta_struct_len()
            && slots_offset % 8 == 0
            && slot_len as usize >= size_of::<relay_meta_slot>()
            && slot_len % 8 == 0
            && u64::from(slots_offset) + info.n_subbufs * u64::from(slot_len) <= info.meta_len,
        "{name}: {} slots of {slot_len} bytes at {slots_offset} do not fit between \
         meta_struct_len {} and meta_len {}, 8-byte aligned",
        info.n_subbufs,
        meta.meta_struct_len(),
        info.meta_len
    );
    assert_eq!(
        (meta.subbuf_size(), meta.n_subbufs(), meta.cpu()),
        (info.subbuf_size, info.n_subbufs, info.cpu),
        "{name}: meta area geometry (subbuf_size, n_subbufs, cpu) and GET_INFO's"
    );
    assert_eq!(
        meta.flags(),
        buf.info().flags,
        "{name}: meta area flags and GET_INFO's"
    );
    assert_ne!(
        meta.caps() & RELAY_META_CAP_FLUSH,
        0,
        "{name}: caps announce FLUSH (the client implements it)"
    );
    assert_eq!(meta.reserved(), 0, "{name}: reserved");
    assert_eq!(
        meta.seq_lock() % 2,
        0,
        "{name}: seq_lock {} is odd at rest",
        meta.seq_lock()
    );
}

/// Checks the slots of `buf` at rest: the ring holds the sub-buffers up to
/// `st.produced` (the one being written, if `started`: a full no-overwrite
/// buffer has not started it), each in its slot with relay_app's header,
/// the current one without padding, and the slots never used are empty.
fn check_ring(buf: &Buf, st: &State, started: bool) {
    let n = buf.info.n_subbufs;
    let last = if started {
        st.produced
    } else {
        st.produced
            .checked_sub(1)
            .expect("a blocked writer has produced something")
    };
    let first = (last + 1).saturating_sub(n);
    for idx in 0..n {
        let slot = buf.meta().slot(idx);
        // The newest sub-buffer that lives in slot idx, if any.
        let want = if idx <= last {
            last - (last - idx) % n
        } else {
            RELAY_META_SLOT_EMPTY
        };
        assert_eq!(
            slot.seq, want,
            "{}: slot {idx} (ring {first}..={last}, produced {}): {slot:?}",
            buf.name, st.produced
        );
        if want == RELAY_META_SLOT_EMPTY {
            continue;
        }
        assert_eq!(
            u64::from(slot.header),
            HDR,
            "{}: header of slot {idx}",
            buf.name
        );
        assert!(
            u64::from(slot.padding) <= buf.info.subbuf_size - HDR,
            "{}: padding of slot {idx}: {slot:?}",
            buf.name
        );
        if want == st.produced {
            assert_eq!(
                slot.padding, 0,
                "{}: the sub-buffer being written has no padding",
                buf.name
            );
        }
    }
}

/// What `drain` got.
struct Drained {
    /// The data of the sub-buffers received, in order.
    data: Vec<u8>,
    /// Sub-buffers received.
    got: u64,
    /// Sub-buffers lost to the writer.
    lost: u64,
    /// The slots' lost_before of the sub-buffers received, summed.
    lost_before: u64,
}

/// Drains every ready sub-buffer of `buf` through the meta area, with no
/// system call per sub-buffer: read the state, skip (and release) what
/// the writer lapped, then for each ready one check its slot, the header
/// word and the geometry, copy the data out, check that the slot still
/// holds it, and release them all with one CONSUME.
fn drain(buf: &Buf) -> Drained {
    let (info, meta, name) = (&buf.info, buf.meta(), &buf.name);
    let n = info.n_subbufs;
    let st = meta.state();
    assert!(
        st.consumed <= st.produced,
        "{name}: consumed {} > produced {}",
        st.consumed,
        st.produced
    );
    let mut out = Drained {
        data: Vec::new(),
        got: 0,
        lost: 0,
        lost_before: 0,
    };
    let mut seq = st.consumed;
    if info.flags & RELAY_BUF_OVERWRITE != 0 && st.produced >= n {
        let first = st.produced - n + 1;
        if first > seq {
            for old in seq..first {
                let held = meta.slot_seq(old % n);
                assert!(
                    held != RELAY_META_SLOT_EMPTY && held > old,
                    "{name}: overwritten seq {old} (produced {}): its slot holds {held}, \
                     expected a later sub-buffer",
                    st.produced
                );
            }
            // CONSUME releases from the consumed count on: the lapped
            // sub-buffers are released and reported lost.
            let c = buf
                .consume(seq, first - seq)
                .unwrap_or_else(|e| panic!("{name}: CONSUME {seq}..{first}: {}", errno_name(e)));
            assert_eq!(
                (c.lost, c.consumed),
                (first - seq, first),
                "{name}: lapped sub-buffers reported lost, and the new consumed count"
            );
            out.lost += c.lost;
            seq = first;
        }
    }
    let from = seq;
    let mut changed = 0;
    while seq < st.produced {
        let idx = seq % n;
        let slot = meta.slot(idx);
        assert_eq!(
            slot.seq, seq,
            "{name}: ready seq {seq} (produced {}): its slot holds another",
            st.produced
        );
        let (header, padding) = (u64::from(slot.header), u64::from(slot.padding));
        assert_eq!(header, HDR, "{name}: seq {seq}: header");
        assert!(
            header + padding <= info.subbuf_size,
            "{name}: seq {seq}: header + padding beyond the sub-buffer: {slot:?}"
        );
        let start = idx * info.subbuf_size;
        let data_offset = start + header;
        let data_len = info.subbuf_size - header - padding;
        let bytes = buf.bytes();
        assert_eq!(
            u64::from(u32_at(bytes, start)),
            padding,
            "{name}: seq {seq}: the sub-buffer header does not hold the slot's padding"
        );
        let chunk = bytes[data_offset as usize..(data_offset + data_len) as usize].to_vec();
        // The copy, then the slot's seq again: pairs with the writer's full
        // barrier after it claims the slot.
        fence(Ordering::Acquire);
        if meta.slot_seq(idx) == seq {
            out.data.extend_from_slice(&chunk);
            out.got += 1;
            out.lost_before += slot.lost_before;
        } else {
            changed += 1;
        }
        seq += 1;
    }
    if st.produced > from {
        let c = buf.consume(from, st.produced - from).unwrap_or_else(|e| {
            panic!("{name}: CONSUME {from}..{}: {}", st.produced, errno_name(e))
        });
        assert_eq!(
            c.consumed, st.produced,
            "{name}: CONSUME returns the new consumed count"
        );
        // Everything is drained at rest: CONSUME and the slots agree.
        assert_eq!(
            c.lost, changed,
            "{name}: CONSUME's lost and the sub-buffers whose slot changed during the copy"
        );
        out.lost += c.lost;
    }
    out
}

fn records_of(cpu: u32, data: Vec<u8>) -> Vec<u64> {
    let mut per_cpu = BTreeMap::new();
    per_cpu.insert(cpu, data);
    klog_gen_records(&per_cpu).remove(&cpu).unwrap_or_default()
}

#[test]
fn get_info_describes_buffer_and_mapping() {
    if !in_vm() {
        return;
    }
    let _m = Modules::klog("subbuf_size=8192 n_subbufs=3");
    for cpu in online_cpus() {
        // Buf::open checks that GET_INFO returns the 40 bytes it filled.
        let info = Buf::cpu(cpu).info;
        assert_eq!(info.subbuf_size, 8192, "cpu{cpu}: subbuf_size");
        assert_eq!(info.n_subbufs, 3, "cpu{cpu}: n_subbufs");
        assert_eq!(info.mmap_len, 3 * 8192, "cpu{cpu}: mmap_len");
        assert_eq!(info.cpu, cpu, "cpu{cpu}: cpu");
        assert_eq!(
            info.flags, 0,
            "cpu{cpu}: no flags on a per-CPU no-overwrite buffer"
        );
        assert!(
            info.meta_len >= (size_of::<relay_meta>() + 3 * size_of::<relay_meta_slot>()) as u64,
            "cpu{cpu}: meta_len {} cannot hold struct relay_meta and 3 slots",
            info.meta_len
        );
    }
    drop(_m);

    let _m = Modules::klog("global=1 overwrite=1 subbuf_size=3000 n_subbufs=3");
    let info = Buf::cpu(0).info;
    assert_eq!(
        info.mmap_len,
        9000u64.div_ceil(page_size()) * page_size(),
        "mmap_len is the page-aligned buffer size"
    );
    assert_eq!(info.cpu, 0, "a global buffer reports cpu 0");
    assert_eq!(
        info.flags,
        RELAY_BUF_GLOBAL | RELAY_BUF_OVERWRITE,
        "flags of a global overwrite buffer"
    );
    assert!(
        std::fs::metadata(format!("{DIR}/cpu1")).is_err(),
        "a global channel has no cpu1 file"
    );
}

#[test]
fn meta_area_describes_the_buffer() {
    if !in_vm() {
        return;
    }
    for params in [
        "subbuf_size=8192 n_subbufs=3",
        "global=1 overwrite=1 subbuf_size=3000 n_subbufs=3",
        // 200 slots need a second page of meta area.
        "subbuf_size=64 n_subbufs=200",
    ] {
        let _m = Modules::klog(params);
        let bufs: Vec<Buf> = if params.contains("global=1") {
            vec![Buf::cpu(0)]
        } else {
            online_cpus().into_iter().map(Buf::cpu).collect()
        };
        for buf in &bufs {
            check_meta_header(buf);
            let name = format!("{params}: {}", buf.name);
            // A fresh buffer: nothing produced, consumed, lost or written,
            // slot 0 holds sub-buffer 0 and the others nothing.
            let st = buf.state();
            assert_eq!(
                st,
                State {
                    produced: 0,
                    consumed: 0,
                    lost_full: 0,
                    lost_toobig: 0,
                    lost_overwritten: 0,
                    committed: st.committed,
                    flags: buf.info.flags,
                },
                "{name}: a fresh buffer"
            );
            assert!(
                u64::from(st.committed) <= HDR,
                "{name}: committed {} in a buffer nobody wrote to",
                st.committed
            );
            assert_eq!(buf.consumed(), 0, "{name}: CONSUME's consumed count");
            check_ring(buf, &st, true);
            assert_eq!(
                buf.slot_of(0).lost_before,
                0,
                "{name}: lost_before of the first sub-buffer"
            );
        }
    }
}

#[test]
fn mmap_maps_the_buffer_and_its_meta_area_read_only() {
    if !in_vm() {
        return;
    }
    // 200 slots: a meta area of two pages or more, so that parts of it can
    // be asked for.
    let _m = Modules::klog("subbuf_size=4096 n_subbufs=200");
    generate_klog(100);
    let buf = Buf::cpu(0);
    let fd = buf.fd();
    let (len, meta_len) = (buf.info.mmap_len, buf.info.meta_len);
    let page = page_size();
    assert!(meta_len >= 2 * page, "200 slots fit in one page");
    let map_at = |off: u64, len: u64, prot: i32| {
        Mapping::at(fd, len as usize, prot, off as libc::off_t).map(|_| ())
    };

    // The three shapes work, and show the same pages.
    let ring = Mapping::new(fd, len as usize, libc::PROT_READ).expect("mmap of the buffer alone");
    let meta_map = Mapping::at(fd, meta_len as usize, libc::PROT_READ, len as libc::off_t)
        .unwrap_or_else(|e| panic!("mmap of the meta area alone: {}", errno_name(e)));
    assert!(
        ring.bytes() == buf.bytes(),
        "the buffer alone and the buffer with its meta area differ"
    );
    assert!(
        buf.bytes().iter().any(|&b| b != 0),
        "100 records and the buffer is all zeros"
    );
    let alone = Meta::at(&meta_map, 0);
    assert_eq!(alone.version(), RELAY_META_VERSION, "meta area alone");
    assert_eq!(
        alone.state(),
        buf.state(),
        "the meta area alone and after the buffer"
    );
    for idx in [0, 1, 199] {
        assert_eq!(
            alone.slot(idx),
            buf.meta().slot(idx),
            "slot {idx} in the meta area alone and after the buffer"
        );
    }
    // The last slot is in the second page: mapped, and empty.
    assert_eq!(alone.slot(199).seq, RELAY_META_SLOT_EMPTY, "slot 199");

    // Any other offset or length is refused. Relay's fault handler would
    // hand out the pages after the buffer and the meta area.
    let mut refused = vec![
        (0, len - page, "the buffer short of a page"),
        (0, len + page, "the buffer and part of the meta area"),
        (0, len + meta_len + page, "beyond the meta area"),
        (len, meta_len - page, "part of the meta area"),
        (len, meta_len + page, "the meta area and beyond"),
        (
            len + page,
            meta_len - page,
            "the meta area from its second page",
        ),
        (
            len - page,
            meta_len,
            "the meta area from the buffer's last page",
        ),
        (page, meta_len, "the meta area's length at the wrong offset"),
        (len + meta_len, page, "after the meta area"),
        (len, len, "the buffer's length at the meta area's offset"),
    ];
    for pages in [1, 4, 8, 64] {
        refused.push((pages * page, len, "the buffer's length at an offset"));
    }
    for (off, l, what) in refused {
        assert_eq!(
            map_at(off, l, libc::PROT_READ),
            Err(libc::EINVAL),
            "mmap of {what} ({l} bytes at offset {off}; buffer {len}, meta area {meta_len})"
        );
    }

    // Only for reading.
    assert_eq!(
        map_at(0, len + meta_len, libc::PROT_READ | libc::PROT_WRITE),
        Err(libc::EACCES),
        "writable mmap of a read-only file"
    );
    // Root may open the file for writing; the mappings stay read-only.
    let rw = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&buf.name)
        .unwrap_or_else(|e| panic!("opening {} read-write: {e}", buf.name));
    for (off, l, what) in [
        (0, len, "the buffer"),
        (0, len + meta_len, "the buffer and its meta area"),
        (len, meta_len, "the meta area"),
    ] {
        let rw_at = |prot: i32| Mapping::at(rw.as_raw_fd(), l as usize, prot, off as libc::off_t);
        assert_eq!(
            rw_at(libc::PROT_READ | libc::PROT_WRITE).map(|_| ()),
            Err(libc::EPERM),
            "writable mmap of {what} through a read-write file"
        );
        let map = rw_at(libc::PROT_READ).unwrap_or_else(|e| {
            panic!(
                "read-only mmap of {what} through a read-write file: {}",
                errno_name(e)
            )
        });
        assert_eq!(
            map.protect(libc::PROT_READ | libc::PROT_WRITE),
            Err(libc::EACCES),
            "mprotect() makes a mapping of {what} writable"
        );
    }
}

#[test]
fn bad_arguments_are_refused() {
    if !in_vm() {
        return;
    }
    let _m = Modules::klog("subbuf_size=4096 n_subbufs=4");
    let buf = Buf::cpu(0);
    let fd = buf.fd();
    let info = buf.info;
    let mut small = [0u32; 4];
    let small_p: *mut c_void = small.as_mut_ptr().cast();

    expect_errno(
        fd,
        ioc(0, RELAY_IOC_MAGIC, 0x7f, 0),
        small_p,
        libc::ENOTTY,
        "unknown number",
    );
    expect_errno(
        fd,
        ioc(0, u32::from(b'x'), 0, 0),
        small_p,
        libc::ENOTTY,
        "foreign type",
    );
    expect_errno(
        fd,
        ioc(IOC_WRITE, RELAY_IOC_MAGIC, nr::GET_INFO, INFO_LEN),
        small_p,
        libc::ENOTTY,
        "GET_INFO written instead of read",
    );
    expect_errno(
        fd,
        ioc(IOC_READ, RELAY_IOC_MAGIC, nr::CONSUME, CONSUME_LEN),
        small_p,
        libc::ENOTTY,
        "CONSUME without the write direction",
    );
    expect_errno(
        fd,
        ioc(IOC_READ, RELAY_IOC_MAGIC, nr::FLUSH, 4),
        small_p,
        libc::ENOTTY,
        "FLUSH with an argument",
    );
    for (nr, dir, name) in [
        (nr::GET_INFO, IOC_READ, "GET_INFO"),
        (nr::CONSUME, IOC_READ | IOC_WRITE, "CONSUME"),
    ] {
        expect_errno(
            fd,
            ioc(dir, RELAY_IOC_MAGIC, nr, 16),
            small_p,
            libc::EINVAL,
            &format!("{name} with a 16-byte structure"),
        );
    }
    expect_errno(
        fd,
        RELAY_IOC_GET_INFO,
        std::ptr::null_mut(),
        libc::EFAULT,
        "GET_INFO to NULL",
    );
    expect_errno(
        fd,
        RELAY_IOC_CONSUME,
        std::ptr::null_mut(),
        libc::EFAULT,
        "CONSUME from NULL",
    );

    // Smaller than the first published structure (no meta_len): refused,
    // nothing written.
    let mut short = [0xa5u8; INFO_LEN];
    expect_errno(
        fd,
        ioc(IOC_READ, RELAY_IOC_MAGIC, nr::GET_INFO, INFO_LEN_SHORT),
        short.as_mut_ptr().cast(),
        libc::EINVAL,
        "GET_INFO with 32 bytes",
    );
    assert!(
        short.iter().all(|&b| b == 0xa5),
        "a refused GET_INFO wrote into its argument"
    );

    // A larger structure: the known part is filled, and nothing beyond it
    // is written (the bytes after it keep their pattern).
    let mut big = [0xa5u8; 48];
    let ret = ioctl(
        fd,
        ioc(IOC_READ, RELAY_IOC_MAGIC, nr::GET_INFO, big.len()),
        big.as_mut_ptr().cast(),
    )
    .unwrap_or_else(|e| panic!("GET_INFO with 48 bytes: {}", errno_name(e)));
    assert_eq!(
        ret as usize, INFO_LEN,
        "GET_INFO with 48 bytes returns the 40 it filled"
    );
    assert_eq!(
        info_from_bytes(&big[..INFO_LEN]),
        info,
        "GET_INFO with a larger structure fills the known part"
    );
    assert!(
        big[INFO_LEN..].iter().all(|&b| b == 0xa5),
        "GET_INFO wrote beyond the structure it knows"
    );
    // Non-zero unknown input is refused; zero unknown input is accepted.
    let mut c_big = [0u64; 5];
    c_big[0] = u64::MAX; // seq, ignored with a count of 0
    c_big[4] = 1;
    let c_big_req = ioc(IOC_READ | IOC_WRITE, RELAY_IOC_MAGIC, nr::CONSUME, 40);
    expect_errno(
        fd,
        c_big_req,
        c_big.as_mut_ptr().cast(),
        libc::E2BIG,
        "CONSUME with non-zero unknown input",
    );
    c_big[4] = 0;
    let ret = ioctl(fd, c_big_req, c_big.as_mut_ptr().cast())
        .unwrap_or_else(|e| panic!("CONSUME with a zero-extended structure: {}", errno_name(e)));
    assert_eq!(
        (ret as usize, c_big[2], c_big[3], c_big[4]),
        (CONSUME_LEN, 0, 0, 0),
        "CONSUME of nothing with a zero-extended structure: bytes filled, lost, consumed, \
         the unknown word"
    );

    // Sequence numbers around the ready range.
    generate_klog(500);
    buf.flush();
    let st = buf.state();
    assert!(
        st.produced >= 2,
        "500 records fill more than one 4 KiB sub-buffer"
    );
    let c = buf.consume(0, 1).expect("CONSUME of seq 0");
    assert_eq!((c.consumed, c.lost), (1, 0), "CONSUME of seq 0");
    assert_eq!(
        buf.state().consumed,
        1,
        "the meta area's consumed count follows CONSUME"
    );
    for (seq, count, what) in [
        (0, 1, "below the consumed count"),
        (1, st.produced, "beyond the produced count"),
        (st.produced, 1, "starting at the produced count"),
        (st.produced + 1, 1, "starting beyond the produced count"),
        (2, 1, "past the consumed count (skipping a sub-buffer)"),
        (1, u64::MAX, "with an overflowing count"),
    ] {
        assert_eq!(
            buf.consume(seq, count).map(|_| ()),
            Err(libc::EINVAL),
            "CONSUME {what} (seq {seq} count {count}, produced {})",
            st.produced
        );
    }
    // A count of 0 ignores seq and returns the consumed count.
    for seq in [0, 1, st.produced, st.produced + 1, u64::MAX] {
        let c = buf
            .consume(seq, 0)
            .unwrap_or_else(|e| panic!("CONSUME of nothing at seq {seq}: {}", errno_name(e)));
        assert_eq!(
            (c.consumed, c.lost),
            (1, 0),
            "CONSUME of nothing at seq {seq}: consumed, lost"
        );
    }
    assert_eq!(buf.state().consumed, 1, "refused CONSUMEs change nothing");
    // The rest, then nothing is ready at the produced count.
    let c = buf
        .consume(1, st.produced - 1)
        .expect("CONSUME of the ready rest");
    assert_eq!(c.consumed, st.produced, "CONSUME of the ready rest");
    assert_eq!(
        buf.consume(st.produced, 1).map(|_| ()),
        Err(libc::EINVAL),
        "CONSUME at the produced count with nothing ready"
    );
    assert_eq!(buf.state().consumed, st.produced);
    assert_eq!(buf.consumed(), st.produced);
}

#[test]
fn subbufs_flow_through_the_meta_area_and_consume() {
    if !in_vm() {
        return;
    }
    let _m = Modules::klog("subbuf_size=4096 n_subbufs=4");
    const N: u64 = 300; // about two sub-buffers per CPU
    let bufs: Vec<(u32, Buf)> = online_cpus()
        .into_iter()
        .map(|c| (c, Buf::cpu(c)))
        .collect();
    generate_klog(N);
    for (cpu, buf) in &bufs {
        buf.flush();
        let st = buf.state();
        assert!(
            st.produced >= 2,
            "cpu{cpu}: {} sub-buffers for {N} records",
            st.produced
        );
        assert_eq!(st.consumed, 0, "cpu{cpu}: nothing consumed yet");
        assert_eq!(buf.consumed(), 0, "cpu{cpu}: CONSUME's consumed count");
        check_ring(buf, &st, true);
        let d = drain(buf);
        assert_eq!(
            (d.got, d.lost, d.lost_before),
            (st.produced, 0, 0),
            "cpu{cpu}: sub-buffers received, lost, writes lost before them"
        );
        let seqs = records_of(*cpu, d.data);
        assert!(
            seqs.iter().copied().eq(0..N),
            "cpu{cpu}: records 0..{N} in order, got {}",
            seqs.len()
        );
        let st = buf.state();
        assert_eq!(st.consumed, st.produced, "cpu{cpu}: all consumed");
        assert_eq!(buf.consumed(), st.produced, "cpu{cpu}: CONSUME agrees");
        assert!(
            u64::from(st.committed) <= HDR,
            "cpu{cpu}: committed {}: the current sub-buffer holds a record",
            st.committed
        );
        assert_eq!(
            (st.lost_full, st.lost_toobig, st.lost_overwritten),
            (0, 0, 0),
            "cpu{cpu}: nothing lost"
        );
        assert_eq!(buf.meta().seq_lock() % 2, 0, "cpu{cpu}: seq_lock at rest");
    }
}

#[test]
fn flush_closes_only_a_partly_filled_subbuf() {
    if !in_vm() {
        return;
    }
    let _m = Modules::klog("subbuf_size=65536 n_subbufs=4");
    let buf = Buf::cpu(0);
    let st0 = buf.state();
    assert_eq!(st0.produced, 0, "a fresh buffer");
    assert!(
        u64::from(st0.committed) <= HDR,
        "a fresh buffer has nothing committed beyond its header: {st0:?}"
    );
    buf.flush();
    assert_eq!(
        buf.state(),
        st0,
        "FLUSH of an empty sub-buffer changes nothing"
    );

    generate_klog(10);
    let st = buf.state();
    assert_eq!(st.produced, 0, "10 records do not fit a sub-buffer");
    let committed = HDR + records_len(0, 10);
    assert_eq!(
        u64::from(st.committed),
        committed,
        "committed is the header and the 10 records in the current sub-buffer"
    );
    buf.flush();
    let st = buf.state();
    assert_eq!(
        st.produced, 1,
        "FLUSH makes the partly filled sub-buffer ready"
    );
    assert!(
        u64::from(st.committed) <= HDR,
        "and starts a new one: committed {}",
        st.committed
    );
    check_ring(&buf, &st, true);
    assert_eq!(
        u64::from(buf.slot_of(0).padding),
        buf.info.subbuf_size - committed,
        "the flushed sub-buffer's padding is what the records left"
    );
    buf.flush();
    assert_eq!(buf.state(), st, "a second FLUSH does nothing");
    let d = drain(&buf);
    assert_eq!(d.got, 1);
    let seqs = records_of(0, d.data);
    assert!(
        seqs.iter().copied().eq(0..10),
        "the 10 records, got {seqs:?}"
    );
}

#[test]
fn fresh_buffer_reads_zero_beyond_the_data() {
    if !in_vm() {
        return;
    }
    // 3 x 3000 bytes: the mapping has a tail that relay never writes.
    let _m = Modules::klog("subbuf_size=3000 n_subbufs=3");
    let buf = Buf::cpu(0);
    let kernel = if patched_kernel() { "patched" } else { "stock" };
    if let Some(pos) = buf.bytes().iter().position(|&b| b != 0) {
        panic!("{kernel} kernel: a fresh buffer has a non-zero byte at {pos}");
    }
    generate_klog(20);
    let st = buf.state();
    assert_eq!(st.produced, 0, "20 records fit in the first sub-buffer");
    let written = st.committed as usize;
    assert_eq!(
        written as u64,
        HDR + records_len(0, 20),
        "committed is the header and the 20 records"
    );
    let bytes = buf.bytes();
    let records: String = (0..20).map(|seq| record(0, seq)).collect();
    assert!(
        &bytes[HDR as usize..written] == records.as_bytes(),
        "{kernel} kernel: the committed bytes are not the 20 records"
    );
    assert!(
        bytes[written..].iter().all(|&b| b == 0),
        "{kernel} kernel: bytes beyond the committed count are not zero"
    );
}

#[test]
fn loss_counters_no_overwrite() {
    if !in_vm() {
        return;
    }
    // 2 x 4 KiB cannot hold 5000 records: the newest are dropped.
    let _m = Modules::klog("subbuf_size=4096 n_subbufs=2");
    const N: u64 = 5000;
    let bufs: Vec<(u32, Buf)> = online_cpus()
        .into_iter()
        .map(|c| (c, Buf::cpu(c)))
        .collect();
    generate_klog(N);
    let mut lost_full = Vec::new();
    for (cpu, buf) in &bufs {
        assert_eq!(
            buf.info.flags & RELAY_BUF_OVERWRITE,
            0,
            "no-overwrite buffer"
        );
        let st = buf.state();
        assert!(
            st.lost_full > 0,
            "cpu{cpu}: nothing dropped, the buffer did not fill"
        );
        assert_eq!(st.lost_overwritten, 0, "cpu{cpu}: no-overwrite overwrote");
        assert_eq!(st.lost_toobig, 0, "cpu{cpu}: records are small");
        assert_eq!(
            st.produced, 2,
            "cpu{cpu}: both sub-buffers full, the writer blocked"
        );
        // The full buffer kept the writer from starting a third one.
        check_ring(buf, &st, false);
        let d = drain(buf);
        assert_eq!(
            d.lost, 0,
            "cpu{cpu}: no sub-buffer lost in no-overwrite mode"
        );
        assert_eq!(
            d.lost_before, 0,
            "cpu{cpu}: writes were dropped only after the last sub-buffer started"
        );
        let mut data = d.data;
        buf.flush();
        data.extend(drain(buf).data);
        let st = buf.state();
        let seqs = records_of(*cpu, data);
        let got = seqs.len() as u64;
        assert_eq!(
            got + st.lost_full,
            N,
            "cpu{cpu}: received {got} + lost_full {} != written {N}",
            st.lost_full
        );
        assert!(
            seqs.iter().copied().eq(0..got),
            "cpu{cpu}: kept records are the oldest"
        );
        lost_full.push(st.lost_full);
    }

    // With room again, the next record starts a sub-buffer whose slot
    // tells how many writes were dropped before it.
    generate_klog(1);
    for ((cpu, buf), lost_full) in bufs.iter().zip(lost_full) {
        let st = buf.state();
        assert_eq!(
            (st.produced, st.lost_full),
            (2, lost_full),
            "cpu{cpu}: one more record fits and starts sub-buffer 2"
        );
        let slot = buf.slot_of(2);
        assert_eq!(
            (slot.seq, u64::from(slot.header), slot.padding),
            (2, HDR, 0),
            "cpu{cpu}: the slot of sub-buffer 2"
        );
        assert_eq!(
            slot.lost_before, lost_full,
            "cpu{cpu}: lost_before of the sub-buffer after the burst of dropped writes"
        );
        assert_eq!(
            u64::from(st.committed),
            HDR + records_len(*cpu, 1),
            "cpu{cpu}: committed: the header and the one record"
        );
    }
}

#[test]
fn loss_counters_overwrite() {
    if !in_vm() {
        return;
    }
    let _m = Modules::klog("subbuf_size=4096 n_subbufs=4 overwrite=1");
    const N: u64 = 5000;
    let bufs: Vec<(u32, Buf)> = online_cpus()
        .into_iter()
        .map(|c| (c, Buf::cpu(c)))
        .collect();
    generate_klog(N);
    for (cpu, buf) in &bufs {
        let info = buf.info;
        assert_ne!(
            info.flags & RELAY_BUF_OVERWRITE,
            0,
            "cpu{cpu}: overwrite flag"
        );
        buf.flush();
        let st = buf.state();
        let n = info.n_subbufs;
        assert!(
            st.produced > n,
            "cpu{cpu}: the writer did not lap ({} sub-buffers)",
            st.produced
        );
        assert_eq!(st.lost_full, 0, "cpu{cpu}: overwrite mode drops no write");
        // Nothing was consumed: every switch after the first lap overwrote one.
        assert_eq!(
            st.lost_overwritten,
            st.produced - n + 1,
            "cpu{cpu}: overwritten sub-buffers (produced {})",
            st.produced
        );
        // The slots hold the newest sub-buffers; the lapped ones' slots hold
        // later ones (checked by drain()). No write was dropped.
        check_ring(buf, &st, true);
        for idx in 0..n {
            assert_eq!(
                buf.meta().slot(idx).lost_before,
                0,
                "cpu{cpu}: lost_before of slot {idx}"
            );
        }
        let d = drain(buf);
        assert_eq!(
            d.got + d.lost,
            st.produced,
            "cpu{cpu}: received + lost != produced"
        );
        assert_eq!(
            d.lost, st.lost_overwritten,
            "cpu{cpu}: reader and kernel disagree on losses"
        );
        let seqs = records_of(*cpu, d.data);
        let first = *seqs.first().expect("records from the last sub-buffers");
        assert!(
            seqs.iter().copied().eq(first..N),
            "cpu{cpu}: the kept records are the newest, contiguous, up to {}",
            N - 1
        );
    }
}

#[test]
fn consume_reports_subbufs_overwritten_while_read() {
    if !in_vm() {
        return;
    }
    let _m = Modules::klog("subbuf_size=4096 n_subbufs=4 overwrite=1");
    let buf = Buf::cpu(0);
    let n = buf.info.n_subbufs;
    generate_klog(200);
    buf.flush();
    let st = buf.state();
    assert!(st.produced >= 1, "seq 0 is ready");
    assert_eq!(st.lost_overwritten, 0, "nothing overwritten yet");
    let slot = buf.slot_of(0);
    assert_eq!(slot.seq, 0, "slot 0 holds seq 0");
    let data_len = buf.info.subbuf_size - u64::from(slot.header) - u64::from(slot.padding);
    assert!(data_len > 0);
    let copy =
        buf.bytes()[slot.header as usize..(u64::from(slot.header) + data_len) as usize].to_vec();
    assert!(
        records_of(0, copy).first() == Some(&0),
        "seq 0 starts with record 0"
    );
    // Lap the buffer while seq 0 is "being read".
    generate_klog(3000);
    fence(Ordering::Acquire);
    let held = buf.meta().slot_seq(0);
    assert!(
        held != RELAY_META_SLOT_EMPTY && held > 0 && held.is_multiple_of(n),
        "slot 0 holds a later sub-buffer after the lap, not {held}: the copy must be discarded"
    );
    let st = buf.state();
    assert_eq!(st.consumed, 0);
    assert_eq!(
        st.lost_overwritten,
        st.produced - n + 1,
        "lost_overwritten grows with every slot reused (produced {})",
        st.produced
    );
    let c = buf.consume(0, 1).expect("CONSUME of seq 0");
    assert_eq!(c.lost, 1, "CONSUME says seq 0 was overwritten");
    assert_eq!(c.consumed, 1);
}

#[test]
fn lost_toobig_counts_records_larger_than_a_subbuf() {
    if !in_vm() {
        return;
    }
    // 24-byte sub-buffers hold 20 bytes of data; every record is longer.
    let _m = Modules::klog("subbuf_size=24 n_subbufs=4");
    const N: u64 = 50;
    let bufs: Vec<(u32, Buf)> = online_cpus()
        .into_iter()
        .map(|c| (c, Buf::cpu(c)))
        .collect();
    generate_klog(N);
    for (cpu, buf) in &bufs {
        let st = buf.state();
        assert_eq!(st.lost_toobig, N, "cpu{cpu}: lost_toobig in the meta area");
        assert_eq!(
            (st.produced, st.lost_full, st.lost_overwritten),
            (0, 0, 0),
            "cpu{cpu}: nothing else happened"
        );
        assert!(
            u64::from(st.committed) <= HDR,
            "cpu{cpu}: committed {}: nothing was written",
            st.committed
        );
    }
    let dropped: u64 = std::fs::read_to_string(format!("{DIR}/dropped"))
        .expect("dropped")
        .trim()
        .parse()
        .expect("a number");
    assert_eq!(
        dropped,
        N * online_cpus().len() as u64,
        "the dropped file sums the losses"
    );
}

#[test]
fn global_buffer_collects_every_cpu_and_flushes() {
    if !in_vm() {
        return;
    }
    let _m = Modules::klog("global=1 subbuf_size=65536 n_subbufs=4");
    let buf = Buf::cpu(0);
    assert_eq!(
        (buf.meta().cpu(), buf.meta().flags()),
        (0, RELAY_BUF_GLOBAL),
        "the meta area of a global buffer: cpu, flags"
    );
    generate_klog(100);
    buf.flush();
    let d = drain(&buf);
    assert_eq!((d.got, d.lost), (1, 0));
    let text = String::from_utf8(d.data).expect("text records");
    let cpus = online_cpus();
    for cpu in &cpus {
        let n = text
            .lines()
            .filter(|l| l.starts_with(&format!("klog_gen cpu={cpu} ")))
            .count();
        assert_eq!(n, 100, "cpu{cpu}'s records in the global buffer");
    }
}

#[test]
fn finalized_buffer_stays_readable() {
    if !in_vm() {
        return;
    }
    let mut m = Modules::klog("subbuf_size=65536 n_subbufs=4");
    let buf = Buf::cpu(0);
    generate_klog(100);
    assert_eq!(
        buf.meta().flags() & RELAY_BUF_FINALIZED,
        0,
        "FINALIZED while the channel is open"
    );
    m.unload("klog_gen");
    m.unload("relay_klog"); // destroys the channel (after flushing it)
    let info = buf.info();
    assert_ne!(
        info.flags & RELAY_BUF_FINALIZED,
        0,
        "GET_INFO reports FINALIZED"
    );
    let st = buf.state();
    assert_ne!(
        st.flags & RELAY_BUF_FINALIZED,
        0,
        "the meta area reports FINALIZED"
    );
    assert_eq!(st.produced, 1, "the channel was flushed when it was closed");
    assert_eq!(buf.meta().seq_lock() % 2, 0, "seq_lock at rest");
    buf.flush(); // a no-op, but no error
    assert_eq!(
        buf.state(),
        st,
        "FLUSH of a finalized buffer changes nothing"
    );
    let d = drain(&buf);
    assert_eq!(d.got, 1);
    assert!(
        records_of(0, d.data).iter().copied().eq(0..100),
        "the records are still there"
    );
    let mut rest = Vec::new();
    (&buf.file)
        .read_to_end(&mut rest)
        .expect("read(2) after the channel closed");

    // relay_app's own file operations pin the module while the file is open;
    // the relay core's do not need to.
    if patched_kernel() {
        m.unload("relay_app");
        assert!(
            buf.bytes().iter().any(|&b| b != 0),
            "the mapping is readable after the module is gone"
        );
        check_meta_header(&buf);
        let st = buf.state();
        assert_eq!(
            (st.produced, st.consumed, st.flags & RELAY_BUF_FINALIZED),
            (1, 1, RELAY_BUF_FINALIZED),
            "the meta area after the module is gone"
        );
        assert_eq!(buf.consumed(), 1, "ioctls work after the module is gone");
    } else {
        let rmmod = Command::new("rmmod")
            .arg("relay_app")
            .output()
            .expect("rmmod");
        assert!(
            !rmmod.status.success(),
            "relay_app unloaded while its buffer file was open"
        );
    }
}

#[test]
fn blktrace_files_are_mappable_on_patched_kernels() {
    if !in_vm() {
        return;
    }
    let _blk = NullBlk::load();
    let dev = File::open("/dev/nullb0").expect("opening /dev/nullb0");
    let setup = BlkTraceSetup::start(&dev);
    let mut block = vec![0u8; 4096];
    let mut d = &dev;
    for _ in 0..16 {
        d.read_exact(&mut block).expect("reading /dev/nullb0");
    }
    let path = format!("/sys/kernel/debug/block/{}/trace0", setup.name());
    if patched_kernel() {
        // GET_INFO (returning the 40 bytes it filled) and the mapping of the
        // buffer and its meta area.
        let trace = Buf::open(&path);
        assert_eq!((trace.info.subbuf_size, trace.info.n_subbufs), (65536, 4));
        // blktrace implements flush_buf(): the meta area announces FLUSH.
        check_meta_header(&trace);
        trace.flush();
        // The reads may have been traced on another CPU: trace0 may hold
        // nothing, but its first slot holds sub-buffer 0 either way.
        let slot = trace.slot_of(0);
        assert_eq!(slot.seq, 0, "slot 0 of blktrace's buffer: {slot:?}");
        assert!(
            u64::from(slot.header) + u64::from(slot.padding) <= trace.info.subbuf_size,
            "slot 0 of blktrace's buffer: {slot:?}"
        );
    } else {
        let trace = File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
        let mut info = relay_buf_info::default();
        assert_eq!(
            ioctl(
                trace.as_raw_fd(),
                RELAY_IOC_GET_INFO,
                (&raw mut info).cast()
            ),
            Err(libc::ENOTTY),
            "stock relay files have no ioctls"
        );
        assert_eq!(
            Mapping::new(trace.as_raw_fd(), 4 * 65536, libc::PROT_READ).map(|_| ()),
            Err(libc::ENODEV),
            "stock blktrace files cannot be mapped (debugfs full proxy)"
        );
    }
}

/// null_blk, from the module directory of a patched build or the stock tree.
struct NullBlk;

impl NullBlk {
    fn load() -> NullBlk {
        // A fresh nullb0, whatever an earlier test left behind.
        let _ = Command::new("rmmod").arg("null_blk").output();
        let ko = std::path::Path::new(&std::env::var("RELAY_MODULES_DIR").unwrap_or_default())
            .join("null_blk.ko");
        let out = if ko.exists() {
            Command::new("insmod").arg(&ko).output()
        } else {
            Command::new("modprobe").arg("null_blk").output()
        }
        .expect("loading null_blk");
        assert!(out.status.success(), "loading null_blk: {out:?}");
        NullBlk
    }
}

impl Drop for NullBlk {
    fn drop(&mut self) {
        let _ = Command::new("rmmod").arg("null_blk").output();
    }
}

/// A running blktrace on a block device, torn down on drop.
struct BlkTraceSetup<'a> {
    dev: &'a File,
    setup: blk_user_trace_setup,
}

impl<'a> BlkTraceSetup<'a> {
    fn start(dev: &'a File) -> BlkTraceSetup<'a> {
        let mut setup = blk_user_trace_setup {
            act_mask: 0xffff,
            buf_size: 65536,
            buf_nr: 4,
            ..Default::default()
        };
        ioctl(
            dev.as_raw_fd(),
            BLKTRACESETUP.code(),
            (&raw mut setup).cast(),
        )
        .unwrap_or_else(|e| panic!("BLKTRACESETUP: {}", errno_name(e)));
        ioctl(dev.as_raw_fd(), BLKTRACESTART.code(), std::ptr::null_mut())
            .unwrap_or_else(|e| panic!("BLKTRACESTART: {}", errno_name(e)));
        BlkTraceSetup { dev, setup }
    }

    fn name(&self) -> String {
        let name = self.setup.name.iter().take_while(|&&c| c != 0);
        String::from_utf8_lossy(&name.map(|&c| c as u8).collect::<Vec<u8>>()).into_owned()
    }
}

impl Drop for BlkTraceSetup<'_> {
    fn drop(&mut self) {
        let fd = self.dev.as_raw_fd();
        let _ = ioctl(fd, BLKTRACESTOP.code(), std::ptr::null_mut());
        let _ = ioctl(fd, BLKTRACETEARDOWN.code(), std::ptr::null_mut());
    }
}

/// A number from a relay_readtest control file.
fn readtest_control(name: &str) -> u64 {
    let path = format!("/sys/kernel/debug/relay_readtest/{name}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{path}: {text:?} is not a number: {e}"))
}

/// What read(2) of one readtest buffer returned, checked as it arrives.
#[derive(Default)]
struct ReadCheck {
    /// The next sequence number expected.
    next: u64,
    received: u64,
    /// Events skipped in the sequence.
    gaps: u64,
}

impl ReadCheck {
    /// One read(2) chunk of `cpu`'s buffer: whole sub-buffers, each
    /// relay_app's 4-byte header and then 32-byte events (cpu, size, seq,
    /// then the low byte of seq): as many as fit, `(subbuf_size - 4) / 32`,
    /// except in a sub-buffer flushed early, which only the last of a
    /// chunk can be. The header's padding word is not trusted: relay_app
    /// writes it when the writer starts the next sub-buffer, which can be
    /// just after read(2) took this one.
    fn feed(&mut self, cpu: u32, chunk: &[u8], subbuf_size: u64) {
        let per_subbuf = ((subbuf_size - HDR) / 32) as usize;
        let mut off = 0usize;
        while off < chunk.len() {
            let start = off + HDR as usize;
            assert!(
                start <= chunk.len(),
                "cpu{cpu}: a read(2) chunk of {} bytes ends inside a sub-buffer header",
                chunk.len()
            );
            let events = per_subbuf.min((chunk.len() - start) / 32);
            for bytes in chunk[start..start + 32 * events].chunks_exact(32) {
                let ev = Event::parse(bytes).expect("32 bytes");
                let seq = ev.seq;
                assert!(
                    ev.cpu == cpu && ev.size == 32 && ev.payload_intact(bytes),
                    "cpu{cpu}: a corrupt event after event {}: {ev:?}",
                    self.next.wrapping_sub(1)
                );
                assert!(
                    seq >= self.next,
                    "cpu{cpu}: event {seq} after event {}: read twice or out of order",
                    self.next - 1
                );
                self.gaps += seq - self.next;
                self.next = seq + 1;
                self.received += 1;
            }
            off = start + 32 * events;
            assert!(
                events == per_subbuf || off == chunk.len(),
                "cpu{cpu}: a sub-buffer of {events} events and then more bytes in a read(2) \
                 chunk of {}: a sub-buffer split across read(2) calls, or torn",
                chunk.len()
            );
        }
    }
}

/// read(2) beside writers on every CPU that fill the buffers, on a kernel
/// with "relay: make read(2) safe against a writer on another CPU": every
/// event arrives once, intact, in order and in whole sub-buffers, and what
/// did not arrive is exactly what the full buffers refused. (Stock
/// relay_file_read() returns events twice or unwritten here.)
#[test]
fn read_beside_writers_returns_every_event_once() {
    if !in_vm() {
        return;
    }
    if !patched_kernel() {
        eprintln!("stock relay_file_read() races the writer: checked on patched kernels only");
        return;
    }
    const EVENTS: u64 = 200_000;
    let _m = Modules::load(&[("relay_app", ""), ("relay_readtest", "")]);
    let dir = "/sys/kernel/debug/relay_readtest";
    write_control(format!("{dir}/overwrite"), "0");
    write_control(format!("{dir}/create"), "1");
    write_control(format!("{dir}/event_n"), &EVENTS.to_string());
    write_control(format!("{dir}/event_size"), "32");
    let subbuf_size = readtest_control("subbuf_size");
    let cpus = online_cpus();
    let files: Vec<(u32, File)> = cpus
        .iter()
        .map(|&cpu| {
            let path = format!("{dir}/cpu{cpu}");
            let file = File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
            (cpu, file)
        })
        .collect();
    let mut checks: Vec<ReadCheck> = cpus.iter().map(|_| ReadCheck::default()).collect();
    let mut chunk = vec![0u8; 256 * 1024];
    let mut read_all = |checks: &mut Vec<ReadCheck>| {
        for ((cpu, file), check) in files.iter().zip(checks.iter_mut()) {
            loop {
                let n = (&*file)
                    .read(&mut chunk)
                    .unwrap_or_else(|e| panic!("read(2) of cpu{cpu}: {e}"));
                if n == 0 {
                    break;
                }
                check.feed(*cpu, &chunk[..n], subbuf_size);
            }
        }
    };

    write_control(format!("{dir}/start_test"), "1");
    loop {
        let done = readtest_control("test_done") == 1;
        read_all(&mut checks);
        if done {
            break;
        }
    }
    // The partly filled sub-buffers come once flushed.
    for (_, file) in &files {
        ioctl(file.as_raw_fd(), RELAY_IOC_FLUSH, std::ptr::null_mut()).expect("RELAY_IOC_FLUSH");
    }
    read_all(&mut checks);

    let written = readtest_control("write_count");
    let dropped = readtest_control("dropped");
    let received: u64 = checks.iter().map(|c| c.received).sum();
    let missing: u64 = checks.iter().map(|c| c.gaps + (EVENTS - c.next)).sum();
    assert_eq!(
        written,
        EVENTS * cpus.len() as u64,
        "the writers did not finish"
    );
    assert!(
        dropped > 0,
        "the buffers never filled: the test proves nothing"
    );
    assert_eq!(
        (received + dropped, missing),
        (written, dropped),
        "received {received} + dropped {dropped} must be written {written}, \
         and the events missing from the sequences exactly the dropped ones"
    );
}
