//! A real-time scheduling policy for the reading thread, as `perf record
//! --realtime` offers one.
//!
//! A producer that writes flat out on every CPU keeps every CPU busy. A
//! reader under the normal policy then waits for its share of a CPU after the
//! kernel woke it, while the buffers fill; once they are full (no-overwrite
//! mode) the kernel drops what it is given. Under `SCHED_FIFO` the reader runs
//! as soon as it is woken, takes what is ready and sleeps again, so it needs
//! little CPU to keep up. The price: a reader that never slept would starve
//! the other tasks of its CPU, which the library's readers do not do (they
//! block in poll(2) whenever nothing is ready).
//!
//! Without privileges, Linux 6.12 and later offer a milder way: a custom
//! scheduling slice under the normal policy ([`set_slice`]). EEVDF lets a
//! woken task whose slice is shorter than the running task's preempt it, so
//! a reader with a short slice gets its CPU from a producer writing flat out
//! while staying a fair-share task.
#![allow(unsafe_code)]

use std::io;
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::{Error, Result};

/// The priorities Linux accepts for `SCHED_FIFO`.
pub const PRIORITIES: std::ops::RangeInclusive<u8> = 1..=99;

/// Puts the calling thread under `SCHED_FIFO` at `priority` (1 to 99).
/// Threads it starts afterwards inherit the policy.
///
/// Needs root, `CAP_SYS_NICE`, or an `RLIMIT_RTPRIO` of at least `priority`;
/// the error says so.
pub fn set_fifo_priority(priority: u8) -> Result<()> {
    if !PRIORITIES.contains(&priority) {
        return Err(Error::Realtime {
            priority,
            source: io::Error::from_raw_os_error(libc::EINVAL),
        });
    }
    let param = libc::sched_param {
        sched_priority: priority.into(),
    };
    // SAFETY: sched_setscheduler(2) only reads `param`, which outlives the
    // call; pid 0 names the calling thread. No memory is handed over.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc != 0 {
        return Err(Error::Realtime {
            priority,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// The slices Linux accepts for [`set_slice`] (it clamps others into them).
pub const SLICES: RangeInclusive<Duration> =
    Duration::from_micros(100)..=Duration::from_millis(100);

/// `struct sched_attr` as sched_setattr(2) first knew it (`SCHED_ATTR_SIZE_VER0`).
const SCHED_ATTR_SIZE_VER0: u32 = 48;

/// sched_getattr(2) of thread `tid` (0: the calling thread).
fn sched_getattr(tid: u32) -> io::Result<libc::sched_attr> {
    let mut attr = libc::sched_attr {
        size: SCHED_ATTR_SIZE_VER0,
        sched_policy: 0,
        sched_flags: 0,
        sched_nice: 0,
        sched_priority: 0,
        sched_runtime: 0,
        sched_deadline: 0,
        sched_period: 0,
    };
    // SAFETY: sched_getattr(2) writes at most `size` (48) bytes into `attr`,
    // which is a 48-byte `struct sched_attr` that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            tid,
            &mut attr as *mut libc::sched_attr,
            SCHED_ATTR_SIZE_VER0,
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(attr)
}

/// True for the policies a custom slice applies to (the fair ones).
fn is_fair(attr: &libc::sched_attr) -> bool {
    [libc::SCHED_OTHER, libc::SCHED_BATCH].contains(&(attr.sched_policy as i32))
}

/// Gives the calling thread a scheduling slice of `slice` (100 µs to
/// 100 ms) under its normal policy, its nice value kept. Threads it starts
/// afterwards inherit it. Needs no privilege.
///
/// Linux before 6.12 accepts the request and ignores it; that is detected
/// (sched_getattr(2) then reports no custom slice) and returned as an
/// error, as is a thread under a real-time policy.
pub fn set_slice(slice: Duration) -> Result<()> {
    let fail = |source: io::Error| Error::Slice { slice, source };
    if !SLICES.contains(&slice) {
        return Err(fail(io::Error::from_raw_os_error(libc::EINVAL)));
    }
    let mut attr = sched_getattr(0).map_err(fail)?;
    if !is_fair(&attr) {
        return Err(fail(io::Error::other(
            "the thread runs under a real-time policy, where slices do not apply",
        )));
    }
    attr.size = SCHED_ATTR_SIZE_VER0;
    // Only reset-on-fork is kept: an unprivileged thread may not clear it.
    attr.sched_flags &= libc::SCHED_FLAG_RESET_ON_FORK as u64;
    attr.sched_runtime = slice.as_nanos() as u64;
    // SAFETY: sched_setattr(2) only reads the 48-byte `attr`, which outlives
    // the call; pid 0 names the calling thread.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_setattr,
            0,
            &attr as *const libc::sched_attr,
            0,
        )
    };
    if rc != 0 {
        return Err(fail(io::Error::last_os_error()));
    }
    if custom_slice(0).map_err(fail)? != Some(slice) {
        return Err(fail(io::Error::from_raw_os_error(libc::EOPNOTSUPP)));
    }
    Ok(())
}

/// The custom slice thread `tid` (a pid names its main thread; 0 the
/// calling thread) runs with, if it asked for one (see [`set_slice`]).
pub fn custom_slice(tid: u32) -> io::Result<Option<Duration>> {
    let attr = sched_getattr(tid)?;
    Ok(
        (is_fair(&attr) && attr.sched_runtime > 0)
            .then(|| Duration::from_nanos(attr.sched_runtime)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_out_of_range_are_refused_with_the_range() {
        for slice in [Duration::from_micros(99), Duration::from_millis(101)] {
            let err = set_slice(slice).unwrap_err();
            assert!(
                err.to_string().contains("slices go from 100 µs to 100 ms"),
                "{err}"
            );
        }
    }

    #[test]
    fn out_of_range_priorities_are_refused_with_the_range() {
        for priority in [0, 100] {
            let err = set_fifo_priority(priority).unwrap_err();
            assert!(
                err.to_string().contains("priorities go from 1 to 99"),
                "{err}"
            );
        }
    }
}
