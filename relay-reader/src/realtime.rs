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
#![allow(unsafe_code)]

use std::io;

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

#[cfg(test)]
mod tests {
    use super::*;

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
