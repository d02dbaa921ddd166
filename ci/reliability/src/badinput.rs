//! Bad input: wrong paths and files given to `relay-reader`, a corrupt
//! padding word in a real channel, and hostile ioctl, control-file and mmap
//! arguments from user space. Each must get a clear error, and the kernel
//! must log no splat.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use relay_sys as sys;
use serde::{Deserialize, Serialize};

use crate::events::Checker;
use crate::guest::{self, Kmsg, Setup};

/// The outcome of one bad input.
#[derive(Debug, Serialize, Deserialize)]
pub struct BadRow {
    /// The input.
    pub name: String,
    /// What a clear answer is.
    pub expected: String,
    /// The answer it got (the error message, or the errno).
    pub got: String,
    /// Kernel splat lines logged meanwhile.
    pub splats: Vec<String>,
    /// The answer was the expected one and the kernel stayed clean.
    pub pass: bool,
}

/// Runs `relay-reader` with `args` (through `wrap` if given); whether it
/// failed cleanly with `expected` in its message, and its error line.
fn reader_case(reader: &Path, wrap: &[&str], args: &[&str], expected: &str) -> (bool, String) {
    let mut cmd = match wrap.split_first() {
        Some((first, rest)) => {
            let mut cmd = Command::new(first);
            cmd.args(rest).arg(reader);
            cmd
        }
        None => Command::new(reader),
    };
    cmd.args(args);
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) => return (false, format!("could not run: {e}")),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error = stderr
        .lines()
        .find(|l| l.contains("error"))
        .map(str::trim)
        .map(str::to_string);
    let got = match &error {
        Some(line) => format!("exit {}: `{line}`", out.status.code().unwrap_or(-1)),
        None => format!(
            "exit {} with no error; stderr: `{}`",
            out.status.code().unwrap_or(-1),
            stderr.lines().next().unwrap_or("").trim()
        ),
    };
    let ok = !out.status.success()
        && error.is_some_and(|l| l.contains(expected))
        && !stderr.contains("panicked");
    (ok, got)
}

/// Runs every bad input; `scratch` is a writable directory in the guest.
pub fn run(modules: &Path, reader: &Path, scratch: &Path, base: Setup) -> Result<Vec<BadRow>> {
    guest::ensure_loaded(modules)?;
    base.apply()?;
    let mut rows = Vec::new();
    let mut push = |name: &str, expected: &str, outcome: (bool, String), kmsg: Kmsg| {
        let splats = kmsg.splats();
        let pass = outcome.0 && splats.is_empty();
        println!(
            "bad input: {name}: {}: {}",
            outcome.1,
            if pass { "pass" } else { "FAIL" }
        );
        rows.push(BadRow {
            name: name.into(),
            expected: expected.into(),
            got: outcome.1,
            splats,
            pass,
        });
    };
    let out = scratch.join("bad");
    let out = out.to_str().context("scratch path")?;
    let chan = guest::channel();
    let chan = chan.to_str().context("channel path")?;
    let regular = scratch.join("regular-file");
    std::fs::write(&regular, b"not a relay file\n")?;
    let regular = regular.to_str().context("scratch path")?;
    let event_n = guest::ctl("event_n");
    let event_n = event_n.to_str().context("path")?;

    let cases: Vec<(&str, Vec<&str>, Vec<&str>, &str)> = vec![
        (
            "debugfs not mounted (private mount namespace, `umount -l /sys/kernel/debug`)",
            vec![
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                "umount -l /sys/kernel/debug && exec \"$0\" \"$@\"",
            ],
            vec!["record", "-q", "-w", "2", "-o", out, chan],
            "debugfs is not mounted",
        ),
        (
            "wrong path",
            vec![],
            vec![
                "record",
                "-q",
                "-w",
                "2",
                "-o",
                out,
                "/sys/kernel/debug/no_such_channel/cpu",
            ],
            "no relay buffer files",
        ),
        (
            "a regular file",
            vec![],
            vec!["record", "-q", "-w", "2", "-o", out, regular],
            "not a relay buffer file",
        ),
        (
            "a non-relay debugfs file (relay_readtest/event_n), --mode auto",
            vec![],
            vec!["record", "-q", "-w", "2", "-o", out, event_n],
            "not a relay buffer file",
        ),
        (
            "a non-relay debugfs file (relay_readtest/event_n), --mode mmap",
            vec![],
            vec![
                "record", "-q", "-w", "2", "--mode", "mmap", "-o", out, event_n,
            ],
            "does not offer the relay mmap ABI",
        ),
        (
            "no permission (`setpriv --reuid=65534`, user nobody)",
            vec![
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
            ],
            vec!["record", "-q", "-w", "2", "-o", "/tmp/nobody-rec", chan],
            "permission denied",
        ),
    ];
    for (name, wrap, args, expected) in cases {
        let kmsg = Kmsg::since();
        let outcome = reader_case(reader, &wrap, &args, expected);
        push(name, expected, outcome, kmsg);
    }

    // A corrupt padding word in a real channel.
    let kmsg = Kmsg::since();
    let (relay_app, mmap) = corrupt_padding(reader, scratch, base)?;
    push(
        "corrupt padding word in sub-buffer 0 of cpu0, --mode relay-app",
        "padding word ... exceeds the sub-buffer size",
        relay_app,
        kmsg,
    );
    let kmsg = Kmsg::since();
    push(
        "the same channel, --mode mmap (padding from the kernel)",
        "every event of cpu0, intact",
        mmap,
        kmsg,
    );

    // Hostile arguments from user space, straight at the kernel.
    base.apply()?;
    guest::start_test()?;
    guest::wait_done(Duration::from_secs(300))?;
    for case in hostile_cases() {
        let kmsg = Kmsg::since();
        let outcome = run_hostile(&case);
        push(&case.name, &case.expected, outcome, kmsg);
    }
    Ok(rows)
}

/// Writes a padding word larger than the sub-buffer into sub-buffer 0 of
/// cpu0 through a writable mapping (root may open the buffer read-write),
/// then reads the channel in relay-app mode (which trusts the word) and in
/// mmap mode (which asks the kernel).
fn corrupt_padding(
    reader: &Path,
    scratch: &Path,
    base: Setup,
) -> Result<((bool, String), (bool, String))> {
    let setup = Setup {
        event_n: 2000,
        ..base
    };
    setup.apply()?;
    guest::start_test()?;
    guest::wait_done(Duration::from_secs(300))?;
    let path = guest::ctl("cpu0");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {} read-write", path.display()))?;
    let info = relay_reader::kernel::query_info(&file, &path)?.context("cpu0 has no ABI")?;
    let bad: u32 = 0xffff_fff0;
    // SAFETY: a new shared mapping of the whole buffer (the only length
    // relay accepts), written at its first word and unmapped at once; no
    // reference into it outlives this block.
    let mapped = unsafe {
        let len = info.mmap_len as usize;
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        if p == libc::MAP_FAILED {
            Err(std::io::Error::last_os_error())
        } else {
            std::ptr::write_volatile(p.cast::<u32>(), bad);
            libc::munmap(p, len);
            Ok(())
        }
    };
    drop(file);
    let rec = scratch.join("padding");
    let rec = rec.to_str().context("path")?;
    let chan = guest::channel();
    let chan = chan.to_str().context("path")?;
    let relay_app = match mapped {
        Ok(()) => reader_case(
            reader,
            &[],
            &[
                "record",
                "-q",
                "-w",
                "2",
                "--mode",
                "relay-app",
                "-o",
                rec,
                chan,
            ],
            "padding word 4294967280 of sub-buffer 0 exceeds the sub-buffer size",
        ),
        Err(e) => {
            // The file-based model of the same parser.
            let mut map = vec![0u8; 4 * setup.subbuf_size as usize];
            map[..4].copy_from_slice(&bad.to_ne_bytes());
            let got = relay_reader::source::relay_app_locate(&map, 0, setup.subbuf_size, 4, 4);
            (
                got.as_ref().is_err_and(|e| e.contains("exceeds")),
                format!(
                    "(file-based model: a writable mapping was refused: {e}) {}",
                    got.err().unwrap_or_default()
                ),
            )
        }
    };
    let rec2 = scratch.join("padding-mmap");
    let _ = std::fs::remove_dir_all(&rec2);
    let out = Command::new(reader)
        .args(["record", "-q", "-w", "2", "--mode", "mmap", "-o"])
        .arg(&rec2)
        .arg(chan)
        .output()?;
    let mut checker = Checker::new(setup.event_size, setup.event_n);
    let data = std::fs::read(rec2.join("cpu0")).unwrap_or_default();
    checker.feed(0, &data, true);
    checker.finish();
    let c = checker.counts;
    let ok = out.status.success() && c.received == setup.event_n && c.corrupt == 0;
    let mmap = (
        ok,
        format!(
            "exit {}: cpu0 {} of {} events, {} corrupt",
            out.status.code().unwrap_or(-1),
            c.received,
            setup.event_n,
            c.corrupt
        ),
    );
    Ok((relay_app, mmap))
}

/// What a hostile call does.
enum Action {
    /// ioctl(cmd) on cpu0 with the argument `arg` (an address) or a buffer
    /// of `buf` bytes holding `fill`.
    Ioctl { cmd: u64, arg: Arg },
    /// pwrite of `bytes` to cpu0.consumed.
    ConsumedWrite(Vec<u8>),
    /// mmap of cpu0 with this length (mmap_len, plus meta_len if
    /// `with_meta`, plus `extra_len`), offset, protection.
    Mmap {
        with_meta: bool,
        extra_len: u64,
        offset_lens: u64,
        prot: i32,
    },
}

enum Arg {
    /// A raw address.
    Addr(u64),
    /// A buffer of this many bytes, starting with these bytes (zeros after).
    Buf(usize, Vec<u8>),
    /// A relay_consume for (consumed + seq_delta, count); seq_delta may be
    /// "produced" (u64::MAX stands for it).
    Consume(u64, u64),
}

struct Hostile {
    name: String,
    expected: String,
    /// The errno that is the clear answer (0: success).
    errno: i32,
    action: Action,
}

const fn ioc(dir: u32, nr: u32, size: usize) -> u64 {
    sys::ioc(dir, sys::RELAY_IOC_MAGIC, nr, size) as u64
}

fn hostile_cases() -> Vec<Hostile> {
    let r = sys::IOC_READ;
    let rw = sys::IOC_READ | sys::IOC_WRITE;
    let info = std::mem::size_of::<sys::relay_buf_info>();
    let consume = std::mem::size_of::<sys::relay_consume>();
    let h = |name: &str, errno: i32, action: Action| Hostile {
        name: name.into(),
        expected: if errno == 0 {
            "success".into()
        } else {
            errno_name(errno)
        },
        errno,
        action,
    };
    let ioctl = |cmd: u64, arg: Arg| Action::Ioctl { cmd, arg };
    let mut consume_tail = vec![0u8; consume + 16];
    consume_tail[consume] = 1;
    vec![
        h(
            "GET_INFO, size 0",
            libc::EINVAL,
            ioctl(ioc(r, sys::nr::GET_INFO, 0), Arg::Buf(64, vec![])),
        ),
        h(
            "GET_INFO, size 8 (too small)",
            libc::EINVAL,
            ioctl(ioc(r, sys::nr::GET_INFO, 8), Arg::Buf(64, vec![])),
        ),
        h(
            "GET_INFO, size 16383 (a future, larger struct)",
            0,
            ioctl(ioc(r, sys::nr::GET_INFO, 16383), Arg::Buf(16383, vec![])),
        ),
        h(
            "GET_INFO, NULL pointer",
            libc::EFAULT,
            ioctl(ioc(r, sys::nr::GET_INFO, info), Arg::Addr(0)),
        ),
        h(
            "GET_INFO, kernel address",
            libc::EFAULT,
            ioctl(
                ioc(r, sys::nr::GET_INFO, info),
                Arg::Addr(0xffff_ffff_8100_0000),
            ),
        ),
        h(
            "GET_INFO, non-canonical address",
            libc::EFAULT,
            ioctl(
                ioc(r, sys::nr::GET_INFO, info),
                Arg::Addr(0x8000_0000_0000_0000),
            ),
        ),
        h(
            "GET_INFO, size 32 (smaller than the first published 40)",
            libc::EINVAL,
            ioctl(ioc(r, sys::nr::GET_INFO, 32), Arg::Buf(64, vec![])),
        ),
        h(
            "CONSUME, larger struct with non-zero unknown bytes",
            libc::E2BIG,
            ioctl(
                ioc(rw, sys::nr::CONSUME, consume + 16),
                Arg::Buf(consume + 16, consume_tail),
            ),
        ),
        h(
            "CONSUME, count 2^64-1",
            libc::EINVAL,
            ioctl(
                ioc(rw, sys::nr::CONSUME, consume),
                Arg::Consume(0, u64::MAX),
            ),
        ),
        h(
            "CONSUME, count past produced",
            libc::EINVAL,
            ioctl(ioc(rw, sys::nr::CONSUME, consume), Arg::Consume(0, 1 << 20)),
        ),
        h(
            "CONSUME, seq == produced (not ready)",
            libc::EINVAL,
            ioctl(
                ioc(rw, sys::nr::CONSUME, consume),
                Arg::Consume(u64::MAX, 1),
            ),
        ),
        h(
            "CONSUME, unmapped pointer",
            libc::EFAULT,
            ioctl(ioc(rw, sys::nr::CONSUME, consume), Arg::Addr(0x1000)),
        ),
        h(
            "CONSUME, size 8 (too small)",
            libc::EINVAL,
            ioctl(ioc(rw, sys::nr::CONSUME, 8), Arg::Buf(64, vec![])),
        ),
        h(
            "CONSUME encoded write-only (_IOW)",
            libc::ENOTTY,
            ioctl(
                ioc(sys::IOC_WRITE, sys::nr::CONSUME, consume),
                Arg::Buf(consume, vec![]),
            ),
        ),
        h(
            "FLUSH with a size encoded",
            libc::ENOTTY,
            ioctl(ioc(0, sys::nr::FLUSH, 8), Arg::Buf(64, vec![])),
        ),
        h(
            "unknown request 0x7f",
            libc::ENOTTY,
            ioctl(ioc(r, 0x7f, 8), Arg::Buf(64, vec![])),
        ),
        h(
            "another driver's magic",
            libc::ENOTTY,
            ioctl(sys::ioc(r, 0x54, 0, 8) as u64, Arg::Buf(64, vec![])),
        ),
        h(
            "cpu0.consumed, 4-byte write",
            libc::EINVAL,
            Action::ConsumedWrite(vec![1, 0, 0, 0]),
        ),
        h(
            "cpu0.consumed, delta 2^64-1 (ignored)",
            0,
            Action::ConsumedWrite(u64::MAX.to_ne_bytes().to_vec()),
        ),
        h(
            "mmap of the buffer and its meta area",
            0,
            Action::Mmap {
                with_meta: true,
                extra_len: 0,
                offset_lens: 0,
                prot: libc::PROT_READ,
            },
        ),
        h(
            "mmap, length mmap_len + meta_len + 4096",
            libc::EINVAL,
            Action::Mmap {
                with_meta: true,
                extra_len: 4096,
                offset_lens: 0,
                prot: libc::PROT_READ,
            },
        ),
        h(
            "mmap writable on a read-only open",
            libc::EACCES,
            Action::Mmap {
                with_meta: false,
                extra_len: 0,
                offset_lens: 0,
                prot: libc::PROT_READ | libc::PROT_WRITE,
            },
        ),
        h(
            "mmap at offsets mmap_len .. 16 mmap_len (past the buffer)",
            libc::EINVAL, // or accepted with nothing past the buffer readable
            Action::Mmap {
                with_meta: false,
                extra_len: 0,
                offset_lens: 1,
                prot: libc::PROT_READ,
            },
        ),
    ]
}

fn errno_name(errno: i32) -> String {
    let name = match errno {
        0 => "success",
        libc::EINVAL => "EINVAL",
        libc::EFAULT => "EFAULT",
        libc::ENOTTY => "ENOTTY",
        libc::ENODATA => "ENODATA",
        libc::E2BIG => "E2BIG",
        libc::EACCES => "EACCES",
        libc::EPERM => "EPERM",
        libc::ESTALE => "ESTALE",
        _ => "errno",
    };
    if errno == 0 {
        return name.into();
    }
    format!("{name} ({})", std::io::Error::from_raw_os_error(errno))
}

/// The buffer's consumed and produced counts, through the ABI.
fn counts(file: &File, path: &Path) -> Result<(u64, u64)> {
    let state = relay_reader::kernel::query_state(file, path)?.context("no ABI")?;
    Ok((state.consumed, state.produced))
}

fn run_hostile(case: &Hostile) -> (bool, String) {
    match try_hostile(case) {
        Ok((errno, note, harmless)) => {
            let ok = errno == case.errno || harmless;
            (ok, format!("{}{note}", errno_name(errno)))
        }
        Err(e) => (false, format!("the test failed: {e:#}")),
    }
}

/// The errno, a note, and whether an unexpected success was shown harmless.
fn try_hostile(case: &Hostile) -> Result<(i32, String, bool)> {
    let mut harmless = false;
    let path = guest::ctl("cpu0");
    let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let info = relay_reader::kernel::query_info(&file, &path)?.context("cpu0 has no ABI")?;
    let before = counts(&file, &path)?;
    let errno_of = |ret: i64| {
        if ret < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
        } else {
            0
        }
    };
    let (errno, mut note) = match &case.action {
        Action::Ioctl { cmd, arg } => {
            let mut buf: Vec<u8> = Vec::new();
            let ptr: u64 = match arg {
                Arg::Addr(a) => *a,
                Arg::Buf(len, head) => {
                    buf = vec![0u8; *len];
                    buf[..head.len()].copy_from_slice(head);
                    buf.as_mut_ptr() as u64
                }
                Arg::Consume(seq, count) => {
                    let seq = if *seq == u64::MAX {
                        before.1
                    } else {
                        before.0 + seq
                    };
                    buf = vec![0u8; 32];
                    buf[..8].copy_from_slice(&seq.to_ne_bytes());
                    buf[8..16].copy_from_slice(&count.to_ne_bytes());
                    buf.as_mut_ptr() as u64
                }
            };
            // SAFETY: the kernel either rejects the call or writes at most
            // _IOC_SIZE(cmd) bytes to `ptr`, which is then a live buffer of
            // at least that size (Buf, Consume); bad addresses are the test,
            // and the kernel answers them with EFAULT.
            let ret = unsafe { libc::ioctl(file.as_raw_fd(), *cmd as _, ptr) };
            let errno = errno_of(ret.into());
            let note = match arg {
                Arg::Buf(len, _) if errno == 0 && *len > 64 => {
                    // Nothing written past the structure the kernel knows.
                    let past = buf[64..].iter().any(|&b| b != 0);
                    if past {
                        "; bytes past the known structure were written".to_string()
                    } else {
                        String::new()
                    }
                }
                _ => String::new(),
            };
            (errno, note)
        }
        Action::ConsumedWrite(bytes) => {
            let cpath = guest::ctl("cpu0.consumed");
            let f = OpenOptions::new().write(true).open(&cpath)?;
            let errno = match f.write_at(bytes, 0) {
                Ok(_) => 0,
                Err(e) => e.raw_os_error().unwrap_or(-1),
            };
            (errno, String::new())
        }
        Action::Mmap {
            with_meta,
            extra_len,
            offset_lens,
            prot,
        } => {
            let meta_len = if *with_meta { info.meta_len } else { 0 };
            let len = (info.mmap_len + meta_len + extra_len) as usize;
            let offset = (info.mmap_len * offset_lens) as libc::off_t;
            // SAFETY: a new mapping nothing else refers to, unmapped below
            // without being touched.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    *prot,
                    libc::MAP_SHARED,
                    file.as_raw_fd(),
                    offset,
                )
            };
            if p == libc::MAP_FAILED {
                (errno_of(-1), String::new())
            } else {
                // SAFETY: `p` is the mapping of `len` bytes made above.
                unsafe { libc::munmap(p, len) };
                if *offset_lens > 0 {
                    let probe = probe_past(&file, len, 16);
                    // Accepted but harmless only if nothing past the buffer reads.
                    harmless = probe.contains(" 0 of ");
                    (0, format!("; {probe}"))
                } else {
                    (0, String::new())
                }
            }
        }
    };
    // The counters stay consistent whatever was asked.
    let after = counts(&file, &path)?;
    if after.0 > after.1 || after.0 < before.0 {
        note.push_str(&format!(
            "; counters inconsistent: consumed {} -> {}, produced {}",
            before.0, after.0, after.1
        ));
        return Ok((-1, note, false));
    }
    Ok((errno, note, harmless))
}

/// How many pages of mappings of `file` at offsets `len`, `2 len`, ...
/// `windows len` (all past the buffer) can be read. Read through
/// /proc/self/mem, which answers EIO where a load would raise SIGBUS.
fn probe_past(file: &File, len: usize, windows: u64) -> String {
    let Ok(mem) = File::open("/proc/self/mem") else {
        return "the mapping was accepted; /proc/self/mem cannot be opened".into();
    };
    let page = 4096;
    let (mut readable, mut pages, mut refused) = (0, 0, 0);
    for k in 1..=windows {
        // SAFETY: a new read-only mapping nothing else refers to, never
        // dereferenced (read through /proc/self/mem), unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                (len as u64 * k) as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            refused += 1;
            continue;
        }
        for off in (0..len).step_by(page) {
            let mut byte = [0u8; 1];
            pages += 1;
            if mem.read_at(&mut byte, p as u64 + off as u64).is_ok() {
                readable += 1;
            }
        }
        // SAFETY: `p` is the mapping of `len` bytes made above.
        unsafe { libc::munmap(p, len) };
    }
    format!(
        "the mapping was accepted; of {windows} mappings further out {refused} refused, \
         {readable} of {pages} pages past the buffer readable (the rest SIGBUS)"
    )
}
