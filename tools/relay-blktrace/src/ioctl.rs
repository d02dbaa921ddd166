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
pub use relay_sys::blktrace::blk_user_trace_setup;
use relay_sys::blktrace::{BLKTRACESETUP, BLKTRACESTART, BLKTRACESTOP, BLKTRACETEARDOWN};
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

/// The device name the kernel returned in `buts`, up to the first NUL.
pub fn name(buts: &blk_user_trace_setup) -> String {
    let bytes: Vec<u8> = buts
        .name
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
        assert_eq!(name(&buts), "nullb0");
        buts.name = [b'x' as _; BLKTRACE_BDEV_SIZE as usize];
        assert_eq!(name(&buts).len(), BLKTRACE_BDEV_SIZE as usize);
    }
}
