//! A randomized exerciser of the relay file ABI, in the spirit of
//! syzkaller but bounded: reader threads open, map, touch, poll, read,
//! ask for state and sub-buffers, consume, flush and close every buffer of
//! a `relay_contract` channel at random, while writers write in both
//! channel modes, the client freezes, flushes, closes and reopens its
//! channel, CPU 1 goes offline and online, and finally the module is
//! unloaded under open and mapped files.
//!
//! What it checks is the kernel's side: no thread hangs, and the kernel
//! log holds no BUG, WARNING, Oops, KASAN, KCSAN or lockdep report (the
//! kernel matrix runs it on KASAN + lockdep and KCSAN kernels). The data
//! itself is checked record by record in contract.rs. Every run prints
//! its seed; `RELAY_EXERCISER_SEED` replays one. `RELAY_EXERCISER_SCALE`
//! (default 1) multiplies the operations of every thread, for longer runs
//! under KASAN or KCSAN.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use relay_sys::{
    relay_buf_info, relay_consume, RELAY_IOC_CONSUME, RELAY_IOC_FLUSH, RELAY_IOC_GET_INFO,
};
use relay_vm_tests::{
    dmesg_tail, in_vm, kernel_reports_since, patched_kernel, task_stacks, Modules,
};

const DIR: &str = "/sys/kernel/debug/relay_contract";
const CPU1_ONLINE: &str = "/sys/devices/system/cpu/cpu1/online";
const SUBBUF_SIZE: usize = 4096;
const N_SUBBUFS: usize = 4;
/// Operations per reader thread and per channel configuration.
const READER_OPS: u32 = 1500;
/// Far beyond what a configuration takes on TCG: only a hang gets there.
const HANG: Duration = Duration::from_secs(300);

/// xorshift64*: small, seedable, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A shared read-only mapping of a whole buffer file, unmapped on drop.
struct Mapping {
    addr: *mut libc::c_void,
    len: usize,
}

impl Mapping {
    fn new(file: &File, len: usize, offset: usize) -> Option<Mapping> {
        // SAFETY: a fresh shared mapping chosen by the kernel; nothing else
        // refers to that address range.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        (addr != libc::MAP_FAILED).then_some(Mapping { addr, len })
    }

    /// Reads one byte of every page: faults each page in.
    fn touch(&self) -> u64 {
        let mut sum = 0u64;
        for off in (0..self.len).step_by(4096) {
            // SAFETY: `off` is inside the mapping, which lives as long as
            // `self`; a relay buffer mapping is readable to its end.
            sum += u64::from(unsafe { std::ptr::read_volatile(self.addr.cast::<u8>().add(off)) });
        }
        sum
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the range was mapped by Mapping::new and is unmapped once.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

/// An ioctl whose result does not matter here, only that it returns.
fn ioctl<T>(file: &File, req: u32, arg: &mut T) -> i32 {
    // SAFETY: every request passes a pointer to its own argument struct,
    // which is at least _IOC_SIZE(req) bytes (or none for FLUSH).
    unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            req as libc::Ioctl,
            std::ptr::from_mut(arg),
        )
    }
}

/// One reader thread: random operations on the buffer files.
fn reader(seed: u64, rounds: u32, stop: Arc<AtomicBool>, ops: Arc<AtomicU64>) {
    let mut rng = Rng(seed | 1);
    let mut files: Vec<File> = Vec::new();
    let mut maps: Vec<Mapping> = Vec::new();
    let mut buf = vec![0u8; 2 * SUBBUF_SIZE];
    let map_len = (SUBBUF_SIZE * N_SUBBUFS).next_multiple_of(4096);
    for _ in 0..rounds {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        ops.fetch_add(1, Ordering::Relaxed);
        let pick = |rng: &mut Rng, n: usize| (rng.below(n as u64)) as usize;
        match rng.below(11) {
            0 | 1 => {
                if files.len() < 6 {
                    let cpu = rng.below(2);
                    let write = rng.below(4) == 0;
                    if let Ok(f) = OpenOptions::new()
                        .read(true)
                        .write(write)
                        .open(format!("{DIR}/cpu{cpu}"))
                    {
                        files.push(f);
                    }
                }
            }
            2 if !files.is_empty() => {
                let i = pick(&mut rng, files.len());
                files.swap_remove(i);
            }
            3 if !files.is_empty() && maps.len() < 4 => {
                // The buffer, the buffer and its meta area, or the meta
                // area alone.
                let f = &files[pick(&mut rng, files.len())];
                let mut info = relay_buf_info::default();
                let meta_len = if ioctl(f, RELAY_IOC_GET_INFO, &mut info) >= 0 {
                    info.meta_len as usize
                } else {
                    0
                };
                let (len, offset) = match rng.below(3) {
                    0 => (map_len, 0),
                    1 => (map_len + meta_len, 0),
                    _ => (meta_len.max(4096), map_len),
                };
                if let Some(m) = Mapping::new(f, len, offset) {
                    maps.push(m);
                }
            }
            4 if !maps.is_empty() => {
                let i = pick(&mut rng, maps.len());
                if rng.below(2) == 0 {
                    maps[i].touch();
                } else {
                    maps.swap_remove(i);
                }
            }
            5 if !files.is_empty() => {
                let i = pick(&mut rng, files.len());
                let mut pfd = libc::pollfd {
                    fd: files[i].as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, rng.below(10) as i32) };
            }
            6 | 7 if !files.is_empty() => {
                let i = pick(&mut rng, files.len());
                let len = 1 + pick(&mut rng, buf.len());
                // SAFETY: `buf` has at least `len` bytes.
                unsafe { libc::read(files[i].as_raw_fd(), buf.as_mut_ptr().cast(), len) };
            }
            8 if !files.is_empty() => {
                // The consumed count (CONSUME of nothing), then a release of
                // up to two sub-buffers from there, ready or not.
                let f = &files[pick(&mut rng, files.len())];
                let mut c = relay_consume::default();
                if ioctl(f, RELAY_IOC_CONSUME, &mut c) >= 0 {
                    let mut c = relay_consume {
                        seq: c.consumed,
                        count: 1 + rng.below(2),
                        ..Default::default()
                    };
                    ioctl(f, RELAY_IOC_CONSUME, &mut c);
                }
            }
            9 if !files.is_empty() => {
                let f = &files[pick(&mut rng, files.len())];
                let mut none = 0u8;
                ioctl(f, RELAY_IOC_FLUSH, &mut none);
            }
            _ => thread::yield_now(),
        }
    }
}

/// The client and the machine around the readers: writes, freezes,
/// flushes, closes and reopens, CPU 1 offline and online.
fn client(seed: u64, rounds: u32, reopen: bool) {
    let mut rng = Rng(seed | 1);
    let ctl = |name: &str, value: &str| {
        // ENODEV while the channel is closed, EBUSY when reopening an open
        // one, EBUSY offlining a CPU: all expected, the kernel must cope.
        let _ = std::fs::write(format!("{DIR}/{name}"), value);
    };
    for _ in 0..rounds {
        match rng.below(8) {
            0..=2 => ctl(
                "write",
                &format!("{} {}", 1 + rng.below(200), 16 + rng.below(200)),
            ),
            3 => ctl("toobig", "3"),
            4 => ctl("freeze", if rng.below(2) == 0 { "1" } else { "0" }),
            5 => ctl("flush", "1"),
            6 if reopen => {
                ctl("close", "1");
                ctl("reopen", "1");
            }
            6 => ctl("flush", "1"),
            _ => {
                if Path::new(CPU1_ONLINE).exists() {
                    let _ = std::fs::write(CPU1_ONLINE, "0");
                    let _ = std::fs::write(CPU1_ONLINE, "1");
                }
            }
        }
    }
}

#[test]
fn random_abi_operations_leave_no_kernel_report() {
    if !in_vm() {
        return;
    }
    let seed = std::env::var("RELAY_EXERCISER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("exerciser seed {seed} (RELAY_EXERCISER_SEED={seed} replays it)");
    let scale: u32 = std::env::var("RELAY_EXERCISER_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    // Stock relay_open_buf() creates a buffer's file before it initializes
    // the buffer's kref: an open in between takes a reference that is then
    // dropped, and the close frees the buffer under the channel. The series
    // fixes that ("relay: initialize a buffer before its file is created");
    // on a stock kernel the client does not recreate its channel while the
    // readers run.
    let patched = patched_kernel();
    if !patched {
        eprintln!("stock kernel: no close/reopen under open readers (relay_open_buf() race)");
    }
    let marker = format!("relay exerciser start {seed}");
    std::fs::write("/dev/kmsg", &marker).expect("writing to /dev/kmsg");

    for (i, params) in [
        "overwrite=0 global=0",
        "overwrite=1 global=0",
        "overwrite=0 global=1",
        "overwrite=1 global=1 header=1",
        "overwrite=0 global=0 proxy=1",
    ]
    .iter()
    .enumerate()
    {
        let mut modules = Modules::load(&[(
            "relay_contract",
            &format!("{params} flush_cb=1 subbuf_size={SUBBUF_SIZE} n_subbufs={N_SUBBUFS}"),
        )]);
        eprintln!("configuration {params}");
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let base = seed.wrapping_add(i as u64 * 7919);
        let readers: Vec<_> = (0..3)
            .map(|r| {
                let (stop, ops) = (stop.clone(), ops.clone());
                thread::spawn(move || {
                    reader(base.wrapping_add(r + 1), READER_OPS * scale, stop, ops)
                })
            })
            .collect();
        let client = thread::spawn(move || client(base, 120 * scale, patched));
        let started = Instant::now();
        while !(client.is_finished() && readers.iter().all(|r| r.is_finished())) {
            if started.elapsed() > HANG {
                // Leave the threads: they are stuck in the kernel.
                let _ = std::fs::write("/proc/sysrq-trigger", "w");
                panic!(
                    "seed {seed}, {params}: no end after {} s ({} reader operations)\n{}\n{}",
                    HANG.as_secs(),
                    ops.load(Ordering::Relaxed),
                    task_stacks(),
                    dmesg_tail(120)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
        client.join().expect("client thread");
        for r in readers {
            r.join().expect("reader thread");
        }
        eprintln!(
            "configuration {params}: {} reader operations, {} client rounds in {:.1} s",
            ops.load(Ordering::Relaxed),
            120 * scale,
            started.elapsed().as_secs_f64()
        );
        if Path::new(CPU1_ONLINE).exists() {
            let _ = std::fs::write(CPU1_ONLINE, "1");
        }
        // Unload the client under an open, mapped file: the buffer lives
        // on, finalized, until the file is closed.
        let file = File::open(format!("{DIR}/cpu0")).ok();
        let map = file
            .as_ref()
            .and_then(|f| Mapping::new(f, (SUBBUF_SIZE * N_SUBBUFS).next_multiple_of(4096), 0));
        modules.unload("relay_contract");
        if let (Some(f), Some(m)) = (&file, &map) {
            m.touch();
            let mut buf = vec![0u8; SUBBUF_SIZE];
            // SAFETY: `buf` has SUBBUF_SIZE bytes.
            unsafe { libc::read(f.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        }
        drop(map);
        drop(file);
        let reports = kernel_reports_since(&marker);
        assert!(
            reports.is_empty(),
            "seed {seed}, {params}: the kernel reported\n{}\n{}",
            reports.join("\n"),
            dmesg_tail(80)
        );
    }
}
