//! The block layer's trace ioctls (`include/uapi/linux/blktrace_api.h`,
//! `include/uapi/linux/fs.h`) and the structure BLKTRACESETUP exchanges.
//!
//! # Safety
//!
//! The only module of the crate allowed `unsafe`: each ioctl gets either no
//! argument or a pointer to a live, writable [`BlkUserTraceSetup`] whose
//! size is the one encoded in the request number (checked in the tests
//! against the kernel's layout), so the kernel reads and writes only memory
//! we own for the duration of the call.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd;

/// `BLKTRACE_BDEV_SIZE`: length of the name the kernel returns.
pub const BDEV_SIZE: usize = 32;

/// The ioctl type of block device requests (`0x12` in `<linux/fs.h>`).
const BLK_IOC_TYPE: u8 = 0x12;

/// `struct blk_user_trace_setup`: the caller fills `act_mask`, `buf_size`,
/// `buf_nr` (and optionally an LBA range and a pid); the kernel fills `name`
/// with the debugfs directory name under `block/`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct BlkUserTraceSetup {
    /// Output: the device's name in debugfs (NUL-padded, `/` turned to `_`).
    pub name: [u8; BDEV_SIZE],
    /// Categories to trace (`BLK_TC_*`); 0 means all.
    pub act_mask: u16,
    /// Bytes per relay sub-buffer.
    pub buf_size: u32,
    /// Number of sub-buffers per CPU.
    pub buf_nr: u32,
    /// First sector traced; 0 for the start of the device.
    pub start_lba: u64,
    /// Last sector traced; 0 for the end of the device.
    pub end_lba: u64,
    /// Trace only this process; 0 for all.
    pub pid: u32,
}

impl BlkUserTraceSetup {
    /// The name the kernel returned, up to the first NUL.
    pub fn name(&self) -> String {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(BDEV_SIZE);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }
}

mod raw {
    #![allow(missing_docs)]
    use super::{BlkUserTraceSetup, BLK_IOC_TYPE};

    // BLKTRACESETUP _IOWR(0x12, 115, struct blk_user_trace_setup)
    nix::ioctl_readwrite!(setup, BLK_IOC_TYPE, 115, BlkUserTraceSetup);
    // BLKTRACESTART _IO(0x12, 116)
    nix::ioctl_none!(start, BLK_IOC_TYPE, 116);
    // BLKTRACESTOP _IO(0x12, 117)
    nix::ioctl_none!(stop, BLK_IOC_TYPE, 117);
    // BLKTRACETEARDOWN _IO(0x12, 118)
    nix::ioctl_none!(teardown, BLK_IOC_TYPE, 118);
}

/// BLKTRACESETUP on the block device `dev`: creates the relay channel
/// `block/<name>/trace<cpu>` and the `dropped` and `msg` files.
pub fn setup(dev: &File, buts: &mut BlkUserTraceSetup) -> nix::Result<()> {
    // SAFETY: `buts` is a live, exclusively borrowed blk_user_trace_setup of
    // the size the request encodes; the kernel copies it in and back out.
    unsafe { raw::setup(dev.as_raw_fd(), buts) }.map(drop)
}

/// BLKTRACESTART: events flow into the channel.
pub fn start(dev: &File) -> nix::Result<()> {
    // SAFETY: the request takes no argument.
    unsafe { raw::start(dev.as_raw_fd()) }.map(drop)
}

/// BLKTRACESTOP: no more events; the kernel flushes the channel
/// (`relay_flush`), so the partly filled sub-buffers become readable.
pub fn stop(dev: &File) -> nix::Result<()> {
    // SAFETY: the request takes no argument.
    unsafe { raw::stop(dev.as_raw_fd()) }.map(drop)
}

/// BLKTRACETEARDOWN: stops if needed, closes the channel and removes its
/// debugfs files.
pub fn teardown(dev: &File) -> nix::Result<()> {
    // SAFETY: the request takes no argument.
    unsafe { raw::teardown(dev.as_raw_fd()) }.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    /// Offsets as x86-64 (and every LP64 target) lays out the C structure:
    /// `__u16 act_mask` after the name, `__u32`s aligned to 4, `__u64`s to 8.
    #[test]
    fn layout_matches_the_kernel() {
        assert_eq!(offset_of!(BlkUserTraceSetup, name), 0);
        assert_eq!(offset_of!(BlkUserTraceSetup, act_mask), 32);
        assert_eq!(offset_of!(BlkUserTraceSetup, buf_size), 36);
        assert_eq!(offset_of!(BlkUserTraceSetup, buf_nr), 40);
        assert_eq!(offset_of!(BlkUserTraceSetup, start_lba), 48);
        assert_eq!(offset_of!(BlkUserTraceSetup, end_lba), 56);
        assert_eq!(offset_of!(BlkUserTraceSetup, pid), 64);
        assert_eq!(size_of::<BlkUserTraceSetup>(), 72);
        assert_eq!(align_of::<BlkUserTraceSetup>(), 8);
    }

    /// The request numbers of `<linux/fs.h>`, as the C preprocessor makes them.
    #[test]
    fn request_numbers() {
        let size = size_of::<BlkUserTraceSetup>();
        assert_eq!(
            nix::request_code_readwrite!(BLK_IOC_TYPE, 115, size) as u32,
            0xc048_1273
        );
        assert_eq!(nix::request_code_none!(BLK_IOC_TYPE, 116) as u32, 0x1274);
        assert_eq!(nix::request_code_none!(BLK_IOC_TYPE, 117) as u32, 0x1275);
        assert_eq!(nix::request_code_none!(BLK_IOC_TYPE, 118) as u32, 0x1276);
    }

    /// What a C compiler makes of the system's `<linux/blktrace_api.h>` and
    /// `<linux/fs.h>` must equal the Rust definitions here and in `record`.
    #[test]
    // ioctl_num_type is c_ulong with glibc and c_int with musl.
    #[allow(clippy::unnecessary_cast)]
    fn c_compiler_agrees() {
        const PROGRAM: &str = r#"
#include <stddef.h>
#include <stdio.h>
#include <linux/fs.h>
#include <linux/blktrace_api.h>
#define SHOW(x) printf(#x " %llu\n", (unsigned long long)(x))
int main(void)
{
	SHOW(BLKTRACESETUP);
	SHOW(BLKTRACESTART);
	SHOW(BLKTRACESTOP);
	SHOW(BLKTRACETEARDOWN);
	SHOW(sizeof(struct blk_user_trace_setup));
	SHOW(offsetof(struct blk_user_trace_setup, act_mask));
	SHOW(offsetof(struct blk_user_trace_setup, buf_size));
	SHOW(offsetof(struct blk_user_trace_setup, buf_nr));
	SHOW(offsetof(struct blk_user_trace_setup, start_lba));
	SHOW(offsetof(struct blk_user_trace_setup, end_lba));
	SHOW(offsetof(struct blk_user_trace_setup, pid));
	SHOW(sizeof(struct blk_io_trace));
	SHOW(offsetof(struct blk_io_trace, cpu));
	SHOW(offsetof(struct blk_io_trace, pdu_len));
	SHOW(BLK_IO_TRACE_MAGIC | BLK_IO_TRACE_VERSION);
	return 0;
}
"#;
        use crate::record;
        let dir = std::env::temp_dir().join(format!("relay-blktrace-c-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("abi.c");
        let exe = dir.join("abi");
        std::fs::write(&src, PROGRAM).unwrap();
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let status = std::process::Command::new(&cc)
            .args(["-Wall", "-Werror", "-o"])
            .arg(&exe)
            .arg(&src)
            .status()
            .unwrap_or_else(|e| panic!("running the C compiler {cc:?}: {e}"));
        assert!(
            status.success(),
            "the C compiler rejected <linux/blktrace_api.h> (is linux-libc-dev installed?)"
        );
        let out = std::process::Command::new(&exe).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let c: std::collections::HashMap<&str, u64> = text
            .lines()
            .filter_map(|l| l.rsplit_once(' '))
            .map(|(k, v)| (k, v.parse().unwrap()))
            .collect();
        let size = size_of::<BlkUserTraceSetup>();
        let expect = [
            (
                "BLKTRACESETUP",
                nix::request_code_readwrite!(BLK_IOC_TYPE, 115, size) as u64,
            ),
            (
                "BLKTRACESTART",
                nix::request_code_none!(BLK_IOC_TYPE, 116) as u64,
            ),
            (
                "BLKTRACESTOP",
                nix::request_code_none!(BLK_IOC_TYPE, 117) as u64,
            ),
            (
                "BLKTRACETEARDOWN",
                nix::request_code_none!(BLK_IOC_TYPE, 118) as u64,
            ),
            ("sizeof(struct blk_user_trace_setup)", size as u64),
            (
                "offsetof(struct blk_user_trace_setup, act_mask)",
                offset_of!(BlkUserTraceSetup, act_mask) as u64,
            ),
            (
                "offsetof(struct blk_user_trace_setup, buf_size)",
                offset_of!(BlkUserTraceSetup, buf_size) as u64,
            ),
            (
                "offsetof(struct blk_user_trace_setup, buf_nr)",
                offset_of!(BlkUserTraceSetup, buf_nr) as u64,
            ),
            (
                "offsetof(struct blk_user_trace_setup, start_lba)",
                offset_of!(BlkUserTraceSetup, start_lba) as u64,
            ),
            (
                "offsetof(struct blk_user_trace_setup, end_lba)",
                offset_of!(BlkUserTraceSetup, end_lba) as u64,
            ),
            (
                "offsetof(struct blk_user_trace_setup, pid)",
                offset_of!(BlkUserTraceSetup, pid) as u64,
            ),
            ("sizeof(struct blk_io_trace)", record::HEADER_LEN as u64),
            (
                "offsetof(struct blk_io_trace, cpu)",
                record::offset::CPU as u64,
            ),
            (
                "offsetof(struct blk_io_trace, pdu_len)",
                record::offset::PDU_LEN as u64,
            ),
            (
                "BLK_IO_TRACE_MAGIC | BLK_IO_TRACE_VERSION",
                u64::from(record::MAGIC | record::VERSION),
            ),
        ];
        for (name, rust) in expect {
            assert_eq!(
                c.get(name),
                Some(&rust),
                "{name}: C says {:?}, Rust says {rust}",
                c.get(name)
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn name_stops_at_nul() {
        let mut buts = BlkUserTraceSetup::default();
        buts.name[..6].copy_from_slice(b"nullb0");
        assert_eq!(buts.name(), "nullb0");
        buts.name = [b'x'; BDEV_SIZE];
        assert_eq!(buts.name().len(), BDEV_SIZE);
    }
}
