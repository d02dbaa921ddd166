//! The block layer's trace ioctls, on the request numbers and the structure
//! that relay-sys generates from `include/uapi/linux/blktrace_api.h` and
//! `include/uapi/linux/fs.h` (checked there against a C compiler).
//!
//! # Safety
//!
//! The only module of the crate allowed `unsafe`: each ioctl gets a pointer
//! to a live, writable argument of the type its [`Request`] is tied to
//! (`()` for none), whose size is the one encoded in the request number, so
//! the kernel reads and writes only memory we own for the duration of the
//! call.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd;

use nix::errno::Errno;
pub use relay_sys::blktrace::{blk_user_trace_setup, blk_user_trace_setup2};
use relay_sys::blktrace::{
    BLKTRACESETUP, BLKTRACESETUP2, BLKTRACESTART, BLKTRACESTOP, BLKTRACETEARDOWN,
    BLKTRACE_BDEV_SIZE2,
};
use relay_sys::Request;

/// ioctl(2) of `request` on `dev` with `arg`.
fn ioctl<T>(dev: &File, request: Request<T>, arg: &mut T) -> nix::Result<()> {
    // SAFETY: relay-sys ties each request to the type whose size it encodes,
    // and `arg` is a live, exclusively borrowed value of that type (`()`,
    // which the kernel does not touch, for the requests without argument).
    let ret = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            request.code() as libc::Ioctl,
            std::ptr::from_mut(arg),
        )
    };
    Errno::result(ret).map(drop)
}

/// The device name the kernel returned in a setup structure's `name`, up
/// to the first NUL.
pub fn name(name: &[std::ffi::c_char]) -> String {
    let bytes: Vec<u8> = name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// BLKTRACESETUP on the block device `dev`: creates the relay channel
/// `block/<name>/trace<cpu>` and the `dropped` and `msg` files. The caller
/// fills `act_mask`, `buf_size`, `buf_nr` (and optionally an LBA range and a
/// pid); the kernel fills `name` (see [`name`]).
pub fn setup(dev: &File, buts: &mut blk_user_trace_setup) -> nix::Result<()> {
    ioctl(dev, BLKTRACESETUP, buts)
}

/// BLKTRACESETUP2 (Linux 6.19): as [`setup`], for a trace of version 2
/// records (`struct blk_io_trace2`, 64-bit action), with a 64-bit
/// `act_mask`. Kernels without it refuse the request (ENOTTY, or EINVAL
/// from a driver's own ioctl handler).
pub fn setup2(dev: &File, buts: &mut blk_user_trace_setup2) -> nix::Result<()> {
    ioctl(dev, BLKTRACESETUP2, buts)
}

/// A `blk_user_trace_setup2` asking for `buf_nr` sub-buffers of
/// `buf_size` bytes per CPU and the categories of `act_mask` (0: the
/// kernel's default), everything else zero (bindgen derives no `Default`
/// for its long arrays).
pub fn setup2_args(act_mask: u64, buf_size: u32, buf_nr: u32) -> blk_user_trace_setup2 {
    blk_user_trace_setup2 {
        name: [0; BLKTRACE_BDEV_SIZE2 as usize],
        act_mask,
        buf_size,
        buf_nr,
        start_lba: 0,
        end_lba: 0,
        pid: 0,
        flags: 0,
        reserved: [0; 11],
    }
}

/// BLKTRACESTART: events flow into the channel.
pub fn start(dev: &File) -> nix::Result<()> {
    ioctl(dev, BLKTRACESTART, &mut ())
}

/// BLKTRACESTOP: no more events; the kernel flushes the channel
/// (`relay_flush`), so the partly filled sub-buffers become readable.
pub fn stop(dev: &File) -> nix::Result<()> {
    ioctl(dev, BLKTRACESTOP, &mut ())
}

/// BLKTRACETEARDOWN: stops if needed, closes the channel and removes its
/// debugfs files.
pub fn teardown(dev: &File) -> nix::Result<()> {
    ioctl(dev, BLKTRACETEARDOWN, &mut ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_sys::blktrace::BLKTRACE_BDEV_SIZE;

    #[test]
    fn name_stops_at_nul() {
        let mut buts = blk_user_trace_setup::default();
        for (c, &b) in buts.name.iter_mut().zip(b"nullb0") {
            *c = b as _;
        }
        assert_eq!(name(&buts.name), "nullb0");
        buts.name = [b'x' as _; BLKTRACE_BDEV_SIZE as usize];
        assert_eq!(name(&buts.name).len(), BLKTRACE_BDEV_SIZE as usize);
        let mut buts2 = setup2_args(0, 1, 2);
        buts2.name = [b'y' as _; BLKTRACE_BDEV_SIZE2 as usize];
        assert_eq!(name(&buts2.name).len(), BLKTRACE_BDEV_SIZE2 as usize);
    }
}
