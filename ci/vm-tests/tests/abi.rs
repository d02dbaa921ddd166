//! The relay user ABI (`<uapi/linux/relay.h>`) with raw system calls: every
//! ioctl with good and bad arguments, mmap through debugfs, zeroed buffer
//! pages, the loss counters in both modes, finalized buffers.
//!
//! On a stock kernel the ioctls come from the `relay_app` sample module; on a
//! kernel built from `kernel-patches/series/` (it has `relay_flush_buf`) from
//! the relay core, and blktrace's files become mappable too. The
//! expectations are the same, except where a test says otherwise.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::process::Command;

use relay_examples::readtest::Event;
use relay_sys::{
    ioc, relay_buf_info, relay_buf_state, relay_consume, relay_subbuf, IOC_READ, IOC_WRITE,
    RELAY_BUF_FINALIZED, RELAY_BUF_GLOBAL, RELAY_BUF_OVERWRITE, RELAY_IOC_CONSUME, RELAY_IOC_FLUSH,
    RELAY_IOC_GET_INFO, RELAY_IOC_GET_STATE, RELAY_IOC_GET_SUBBUF, RELAY_IOC_MAGIC,
};
use relay_vm_tests::{
    generate_klog, in_vm, klog_gen_records, online_cpus, patched_kernel, write_control, Modules,
};

const DIR: &str = "/sys/kernel/debug/relay_klog";
/// The relay_app header at the start of every sub-buffer: its padding.
const HDR: u64 = 4;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn errno_name(e: i32) -> String {
    format!("{e} ({})", std::io::Error::from_raw_os_error(e))
}

/// ioctl(2) with a raw request number; `Err(errno)` on failure.
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

/// An open buffer file.
struct Buf {
    file: File,
    name: String,
}

impl Buf {
    fn open(path: &str) -> Buf {
        let file = File::open(path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
        Buf {
            file,
            name: path.to_string(),
        }
    }

    fn cpu(cpu: u32) -> Buf {
        Buf::open(&format!("{DIR}/cpu{cpu}"))
    }

    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    fn info(&self) -> relay_buf_info {
        let mut info = relay_buf_info::default();
        ioctl(self.fd(), RELAY_IOC_GET_INFO, (&raw mut info).cast())
            .unwrap_or_else(|e| panic!("{}: GET_INFO: {}", self.name, errno_name(e)));
        info
    }

    fn state(&self) -> relay_buf_state {
        let mut st = relay_buf_state::default();
        ioctl(self.fd(), RELAY_IOC_GET_STATE, (&raw mut st).cast())
            .unwrap_or_else(|e| panic!("{}: GET_STATE: {}", self.name, errno_name(e)));
        st
    }

    fn subbuf(&self, seq: u64) -> Result<relay_subbuf, i32> {
        let mut sb = relay_subbuf {
            seq,
            ..Default::default()
        };
        ioctl(self.fd(), RELAY_IOC_GET_SUBBUF, (&raw mut sb).cast()).map(|_| sb)
    }

    fn consume(&self, seq: u64, count: u64) -> Result<relay_consume, i32> {
        let mut c = relay_consume {
            seq,
            count,
            ..Default::default()
        };
        ioctl(self.fd(), RELAY_IOC_CONSUME, (&raw mut c).cast()).map(|_| c)
    }

    fn flush(&self) {
        ioctl(self.fd(), RELAY_IOC_FLUSH, std::ptr::null_mut())
            .unwrap_or_else(|e| panic!("{}: FLUSH: {}", self.name, errno_name(e)));
    }

    fn map(&self, len: u64) -> Result<Mapping, i32> {
        Mapping::new(self.fd(), len as usize, libc::PROT_READ)
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

/// Drains every ready sub-buffer of `buf` through the mapping: GET_SUBBUF,
/// header check, copy, CONSUME. Returns (data, sub-buffers received,
/// sub-buffers lost to the writer).
fn drain(buf: &Buf, info: &relay_buf_info, map: &Mapping) -> (Vec<u8>, u64, u64) {
    let st = buf.state();
    let mut data = Vec::new();
    let (mut got, mut lost) = (0, 0);
    let mut seq = st.consumed;
    if info.flags & RELAY_BUF_OVERWRITE != 0 && st.produced >= info.n_subbufs {
        let first = st.produced - info.n_subbufs + 1;
        if first > seq {
            for old in seq..first {
                assert_eq!(
                    buf.subbuf(old).map(|_| ()),
                    Err(libc::ESTALE),
                    "{}: GET_SUBBUF of overwritten seq {old} (produced {})",
                    buf.name,
                    st.produced
                );
            }
            // CONSUME releases from the consumed count on: the lapped
            // sub-buffers are released and reported lost.
            let c = buf.consume(seq, first - seq).unwrap_or_else(|e| {
                panic!("{}: CONSUME {seq}..{first}: {}", buf.name, errno_name(e))
            });
            assert_eq!(
                c.lost,
                first - seq,
                "{}: lapped sub-buffers reported lost",
                buf.name
            );
            lost += c.lost;
            seq = first;
        }
    }
    while seq < st.produced {
        let sb = buf
            .subbuf(seq)
            .unwrap_or_else(|e| panic!("{}: GET_SUBBUF {seq}: {}", buf.name, errno_name(e)));
        let slot = (seq % info.n_subbufs) * info.subbuf_size;
        assert_eq!(sb.data_offset, slot + HDR, "seq {seq}: data offset");
        assert_eq!(
            sb.data_len + sb.padding + HDR,
            info.subbuf_size,
            "seq {seq}: data + padding + header != sub-buffer size"
        );
        let bytes = map.bytes();
        assert_eq!(
            u64::from(u32_at(bytes, slot)),
            sb.padding,
            "seq {seq}: the sub-buffer header does not hold the padding"
        );
        let chunk =
            bytes[sb.data_offset as usize..(sb.data_offset + sb.data_len) as usize].to_vec();
        let c = buf
            .consume(seq, 1)
            .unwrap_or_else(|e| panic!("{}: CONSUME {seq}: {}", buf.name, errno_name(e)));
        assert_eq!(
            c.consumed,
            seq + 1,
            "CONSUME returns the new consumed count"
        );
        if c.lost == 0 {
            data.extend_from_slice(&chunk);
            got += 1;
        } else {
            lost += c.lost;
        }
        seq += 1;
    }
    (data, got, lost)
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
        let info = Buf::cpu(cpu).info();
        assert_eq!(info.subbuf_size, 8192, "cpu{cpu}: subbuf_size");
        assert_eq!(info.n_subbufs, 3, "cpu{cpu}: n_subbufs");
        assert_eq!(info.mmap_len, 3 * 8192, "cpu{cpu}: mmap_len");
        assert_eq!(info.cpu, cpu, "cpu{cpu}: cpu");
        assert_eq!(
            info.flags, 0,
            "cpu{cpu}: no flags on a per-CPU no-overwrite buffer"
        );
    }
    drop(_m);

    let _m = Modules::klog("global=1 overwrite=1 subbuf_size=3000 n_subbufs=3");
    let info = Buf::cpu(0).info();
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
fn mapping_at_an_offset_is_refused() {
    if !in_vm() {
        return;
    }
    let _m = Modules::klog("subbuf_size=8192 n_subbufs=4");
    generate_klog(100);
    let buf = Buf::cpu(0);
    let len = buf.info().mmap_len as usize;
    // Relay's fault handler would hand out the pages after the buffer for
    // a mapping that starts at an offset; every such mapping is refused.
    for pages in [1, 4, 8, 64] {
        let offset = (pages * page_size()) as libc::off_t;
        match Mapping::at(buf.fd(), len, libc::PROT_READ, offset) {
            Ok(_) => panic!("mmap of {len} bytes at offset {offset} succeeded, expected EINVAL"),
            Err(e) => assert_eq!(
                e,
                libc::EINVAL,
                "mmap at offset {offset}: {}, expected EINVAL",
                errno_name(e)
            ),
        }
    }
    buf.map(len as u64)
        .unwrap_or_else(|e| panic!("mmap at offset 0: {}", errno_name(e)));
}

#[test]
fn bad_arguments_are_refused() {
    if !in_vm() {
        return;
    }
    let _m = Modules::klog("subbuf_size=4096 n_subbufs=4");
    let buf = Buf::cpu(0);
    let fd = buf.fd();
    let info = buf.info();
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
        ioc(IOC_WRITE, RELAY_IOC_MAGIC, 0, 32),
        small_p,
        libc::ENOTTY,
        "GET_INFO written instead of read",
    );
    expect_errno(
        fd,
        ioc(IOC_READ, RELAY_IOC_MAGIC, 2, 32),
        small_p,
        libc::ENOTTY,
        "GET_SUBBUF without the write direction",
    );
    expect_errno(
        fd,
        ioc(IOC_READ, RELAY_IOC_MAGIC, 4, 4),
        small_p,
        libc::ENOTTY,
        "FLUSH with an argument",
    );
    for (nr, dir, name) in [
        (0, IOC_READ, "GET_INFO"),
        (1, IOC_READ, "GET_STATE"),
        (2, IOC_READ | IOC_WRITE, "GET_SUBBUF"),
        (3, IOC_READ | IOC_WRITE, "CONSUME"),
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
        RELAY_IOC_GET_SUBBUF,
        std::ptr::null_mut(),
        libc::EFAULT,
        "GET_SUBBUF from NULL",
    );

    // A larger structure: zero unknown input is accepted and no more than
    // the kernel knows is written; non-zero unknown input is refused.
    let mut big = [0xa5u8; 48];
    ioctl(
        fd,
        ioc(IOC_READ, RELAY_IOC_MAGIC, 0, 48),
        big.as_mut_ptr().cast(),
    )
    .unwrap_or_else(|e| panic!("GET_INFO with 48 bytes: {}", errno_name(e)));
    assert_eq!(
        u64::from_ne_bytes(big[..8].try_into().expect("8 bytes")),
        info.subbuf_size,
        "GET_INFO with a larger structure fills the known part"
    );
    assert!(
        big[32..].iter().all(|&b| b == 0xa5),
        "GET_INFO wrote beyond the structure it knows"
    );
    let mut sb_big = [0u64; 5];
    sb_big[4] = 1;
    expect_errno(
        fd,
        ioc(IOC_READ | IOC_WRITE, RELAY_IOC_MAGIC, 2, 40),
        sb_big.as_mut_ptr().cast(),
        libc::E2BIG,
        "GET_SUBBUF with non-zero unknown input",
    );
    sb_big[4] = 0;
    expect_errno(
        fd,
        ioc(IOC_READ | IOC_WRITE, RELAY_IOC_MAGIC, 2, 40),
        sb_big.as_mut_ptr().cast(),
        libc::ENODATA,
        "GET_SUBBUF with a zero-extended structure (seq 0 not ready)",
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
    assert_eq!(c.consumed, 1);
    assert_eq!(
        buf.subbuf(0).map(|_| ()),
        Err(libc::EINVAL),
        "GET_SUBBUF of a consumed seq"
    );
    assert_eq!(
        buf.subbuf(st.produced).map(|_| ()),
        Err(libc::ENODATA),
        "GET_SUBBUF being written"
    );
    assert_eq!(
        buf.subbuf(u64::MAX).map(|_| ()),
        Err(libc::ENODATA),
        "GET_SUBBUF far future"
    );
    assert!(buf.subbuf(1).is_ok(), "GET_SUBBUF of a ready seq");
    for (seq, count, what) in [
        (0, 1, "below the consumed count"),
        (1, st.produced, "beyond the produced count"),
        (st.produced, 0, "starting at the produced count"),
        (st.produced + 1, 0, "starting beyond the produced count"),
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
    assert_eq!(buf.state().consumed, 1, "refused CONSUMEs change nothing");

    // mmap: only the whole buffer, only for reading.
    assert_eq!(
        buf.map(info.mmap_len - page_size()).map(|_| ()),
        Err(libc::EINVAL),
        "mmap of a wrong length"
    );
    assert_eq!(
        Mapping::new(
            fd,
            info.mmap_len as usize,
            libc::PROT_READ | libc::PROT_WRITE
        )
        .map(|_| ()),
        Err(libc::EACCES),
        "writable mmap of a read-only file"
    );
    if patched_kernel() {
        // Root may open the file for writing; the mapping stays read-only.
        let rw = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&buf.name)
            .unwrap_or_else(|e| panic!("opening {} read-write: {e}", buf.name));
        let len = info.mmap_len as usize;
        assert_eq!(
            Mapping::new(rw.as_raw_fd(), len, libc::PROT_READ | libc::PROT_WRITE).map(|_| ()),
            Err(libc::EPERM),
            "writable mmap through a read-write file"
        );
        let map = Mapping::new(rw.as_raw_fd(), len, libc::PROT_READ).unwrap_or_else(|e| {
            panic!(
                "read-only mmap through a read-write file: {}",
                errno_name(e)
            )
        });
        // SAFETY: the range is the mapping made just above, still mapped.
        let ret = unsafe { libc::mprotect(map.addr, len, libc::PROT_READ | libc::PROT_WRITE) };
        assert_eq!(
            (ret, errno()),
            (-1, libc::EACCES),
            "mprotect() makes a buffer mapping writable"
        );
    }
}

#[test]
fn subbufs_flow_through_get_subbuf_and_consume() {
    if !in_vm() {
        return;
    }
    let _m = Modules::klog("subbuf_size=4096 n_subbufs=4");
    const N: u64 = 300; // about two sub-buffers per CPU
    let bufs: Vec<(u32, Buf)> = online_cpus()
        .into_iter()
        .map(|c| (c, Buf::cpu(c)))
        .collect();
    let maps: Vec<(relay_buf_info, Mapping)> = bufs
        .iter()
        .map(|(_, b)| {
            let info = b.info();
            let map = b
                .map(info.mmap_len)
                .unwrap_or_else(|e| panic!("{}: mmap: {}", b.name, errno_name(e)));
            (info, map)
        })
        .collect();
    generate_klog(N);
    for ((cpu, buf), (info, map)) in bufs.iter().zip(&maps) {
        buf.flush();
        let st = buf.state();
        assert!(
            st.produced >= 2,
            "cpu{cpu}: {} sub-buffers for {N} records",
            st.produced
        );
        assert_eq!(st.consumed, 0, "cpu{cpu}: nothing consumed yet");
        let (data, got, lost) = drain(buf, info, map);
        assert_eq!(
            (got, lost),
            (st.produced, 0),
            "cpu{cpu}: sub-buffers received, lost"
        );
        let seqs = records_of(*cpu, data);
        assert!(
            seqs.iter().copied().eq(0..N),
            "cpu{cpu}: records 0..{N} in order, got {}",
            seqs.len()
        );
        let st = buf.state();
        assert_eq!(st.consumed, st.produced, "cpu{cpu}: all consumed");
        assert_eq!(
            st.write_offset, HDR,
            "cpu{cpu}: the current sub-buffer holds its header only"
        );
        assert_eq!(
            (st.lost_full, st.lost_toobig, st.lost_overwritten),
            (0, 0, 0),
            "cpu{cpu}: nothing lost"
        );
    }
}

#[test]
fn flush_closes_only_a_partly_filled_subbuf() {
    if !in_vm() {
        return;
    }
    let _m = Modules::klog("subbuf_size=65536 n_subbufs=4");
    let buf = Buf::cpu(0);
    let info = buf.info();
    let map = buf.map(info.mmap_len).expect("mmap");
    let st0 = buf.state();
    assert_eq!((st0.produced, st0.write_offset), (0, HDR), "a fresh buffer");
    buf.flush();
    assert_eq!(
        buf.state().produced,
        0,
        "FLUSH of an empty sub-buffer produces nothing"
    );

    generate_klog(10);
    let st = buf.state();
    assert_eq!(st.produced, 0, "10 records do not fill a sub-buffer");
    assert!(
        st.write_offset > HDR,
        "the records are in the current sub-buffer"
    );
    buf.flush();
    let st = buf.state();
    assert_eq!(
        st.produced, 1,
        "FLUSH makes the partly filled sub-buffer ready"
    );
    assert_eq!(st.write_offset, HDR, "and starts a new one");
    buf.flush();
    assert_eq!(buf.state().produced, 1, "a second FLUSH does nothing");
    let (data, got, _) = drain(&buf, &info, &map);
    assert_eq!(got, 1);
    let seqs = records_of(0, data);
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
    let info = buf.info();
    let map = buf.map(info.mmap_len).expect("mmap");
    let kernel = if patched_kernel() { "patched" } else { "stock" };
    if let Some(pos) = map.bytes().iter().position(|&b| b != 0) {
        panic!("{kernel} kernel: a fresh buffer has a non-zero byte at {pos}");
    }
    generate_klog(20);
    let st = buf.state();
    assert_eq!(st.produced, 0, "20 records fit in the first sub-buffer");
    let bytes = map.bytes();
    let written = st.write_offset as usize;
    assert!(written > HDR as usize, "records written");
    assert!(
        bytes[written..].iter().all(|&b| b == 0),
        "{kernel} kernel: bytes beyond the write offset are not zero"
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
    for (cpu, buf) in &bufs {
        let info = buf.info();
        assert_eq!(info.flags & RELAY_BUF_OVERWRITE, 0, "no-overwrite buffer");
        let map = buf.map(info.mmap_len).expect("mmap");
        let st = buf.state();
        assert!(
            st.lost_full > 0,
            "cpu{cpu}: nothing dropped, the buffer did not fill"
        );
        assert_eq!(st.lost_overwritten, 0, "cpu{cpu}: no-overwrite overwrote");
        assert_eq!(st.lost_toobig, 0, "cpu{cpu}: records are small");
        let (mut data, _, lost) = drain(buf, &info, &map);
        assert_eq!(lost, 0, "cpu{cpu}: no sub-buffer lost in no-overwrite mode");
        buf.flush();
        data.extend(drain(buf, &info, &map).0);
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
        let info = buf.info();
        assert_ne!(
            info.flags & RELAY_BUF_OVERWRITE,
            0,
            "cpu{cpu}: overwrite flag"
        );
        let map = buf.map(info.mmap_len).expect("mmap");
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
        let (data, got, lost) = drain(buf, &info, &map);
        assert_eq!(
            got + lost,
            st.produced,
            "cpu{cpu}: received + lost != produced"
        );
        assert_eq!(
            lost, st.lost_overwritten,
            "cpu{cpu}: reader and kernel disagree on losses"
        );
        let seqs = records_of(*cpu, data);
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
    generate_klog(200);
    buf.flush();
    let sb = buf.subbuf(0).expect("seq 0 is ready");
    assert!(sb.data_len > 0);
    // Lap the buffer while seq 0 is "being read".
    generate_klog(3000);
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
    generate_klog(N);
    for cpu in online_cpus() {
        let st = Buf::cpu(cpu).state();
        assert_eq!(st.lost_toobig, N, "cpu{cpu}: lost_toobig");
        assert_eq!(
            (st.produced, st.lost_full),
            (0, 0),
            "cpu{cpu}: nothing else happened"
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
    let info = buf.info();
    let map = buf.map(info.mmap_len).expect("mmap");
    generate_klog(100);
    buf.flush();
    let (data, got, lost) = drain(&buf, &info, &map);
    assert_eq!((got, lost), (1, 0));
    let text = String::from_utf8(data).expect("text records");
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
    let info = buf.info();
    let map = buf.map(info.mmap_len).expect("mmap");
    generate_klog(100);
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
        "GET_STATE reports FINALIZED"
    );
    assert_eq!(st.produced, 1, "the channel was flushed when it was closed");
    buf.flush(); // a no-op, but no error
    let (data, got, _) = drain(&buf, &info, &map);
    assert_eq!(got, 1);
    assert!(
        records_of(0, data).iter().copied().eq(0..100),
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
            map.bytes().iter().any(|&b| b != 0),
            "the mapping is readable after the module is gone"
        );
        assert_eq!(
            buf.state().produced,
            1,
            "ioctls work after the module is gone"
        );
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
    let trace = Buf::open(&format!("/sys/kernel/debug/block/{}/trace0", setup.name()));
    let mut info = relay_buf_info::default();
    let got = ioctl(trace.fd(), RELAY_IOC_GET_INFO, (&raw mut info).cast());
    let len = 4 * 65536;
    if patched_kernel() {
        got.unwrap_or_else(|e| panic!("GET_INFO on blktrace's trace0: {}", errno_name(e)));
        assert_eq!((info.subbuf_size, info.n_subbufs), (65536, 4));
        let map = trace.map(info.mmap_len).expect("mmap of blktrace's trace0");
        trace.flush(); // blktrace implements flush_buf()
        assert_eq!(map.bytes().len() as u64, info.mmap_len);
    } else {
        assert_eq!(got, Err(libc::ENOTTY), "stock relay files have no ioctls");
        assert_eq!(
            trace.map(len).map(|_| ()),
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

/// `struct blk_user_trace_setup` of `<uapi/linux/blktrace_api.h>`.
#[repr(C)]
#[derive(Default)]
struct BlkUserTraceSetup {
    name: [u8; 32],
    act_mask: u16,
    buf_size: u32,
    buf_nr: u32,
    start_lba: u64,
    end_lba: u64,
    pid: u32,
}

/// A running blktrace on a block device, torn down on drop.
struct BlkTraceSetup<'a> {
    dev: &'a File,
    setup: BlkUserTraceSetup,
}

const BLKTRACESETUP: u32 = ioc(
    IOC_READ | IOC_WRITE,
    0x12,
    115,
    size_of::<BlkUserTraceSetup>(),
);
const BLKTRACESTART: u32 = ioc(0, 0x12, 116, 0);
const BLKTRACESTOP: u32 = ioc(0, 0x12, 117, 0);
const BLKTRACETEARDOWN: u32 = ioc(0, 0x12, 118, 0);

impl<'a> BlkTraceSetup<'a> {
    fn start(dev: &'a File) -> BlkTraceSetup<'a> {
        let mut setup = BlkUserTraceSetup {
            act_mask: 0xffff,
            buf_size: 65536,
            buf_nr: 4,
            ..Default::default()
        };
        ioctl(dev.as_raw_fd(), BLKTRACESETUP, (&raw mut setup).cast())
            .unwrap_or_else(|e| panic!("BLKTRACESETUP: {}", errno_name(e)));
        ioctl(dev.as_raw_fd(), BLKTRACESTART, std::ptr::null_mut())
            .unwrap_or_else(|e| panic!("BLKTRACESTART: {}", errno_name(e)));
        BlkTraceSetup { dev, setup }
    }

    fn name(&self) -> String {
        let end = self.setup.name.iter().position(|&b| b == 0).unwrap_or(32);
        String::from_utf8_lossy(&self.setup.name[..end]).into_owned()
    }
}

impl Drop for BlkTraceSetup<'_> {
    fn drop(&mut self) {
        let fd = self.dev.as_raw_fd();
        let _ = ioctl(fd, BLKTRACESTOP, std::ptr::null_mut());
        let _ = ioctl(fd, BLKTRACETEARDOWN, std::ptr::null_mut());
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
