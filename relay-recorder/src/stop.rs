//! Stopping a recording on a signal without polling a flag.
//!
//! A recorder that checks a stop flag between `poll(100 ms)` calls wakes ten
//! times a second while idle. [`Stop`] instead raises its flag and wakes every
//! registered [`Reader`] from a signal thread, so readers can wait as long as
//! they like and still stop at once.
//!
//! ```no_run
//! use relay_reader::{Mode, Reader};
//! use relay_recorder::stop::Stop;
//! use std::time::Duration;
//!
//! let stop = Stop::on_signals(&[signal_hook::consts::SIGINT])?;
//! let mut reader = Reader::open("/sys/kernel/debug/relay_klog/cpu", Mode::Auto)?;
//! stop.wake_on_stop(reader.waker());
//! while !stop.is_raised() {
//!     reader.poll(Duration::from_secs(3600), &mut |sb| Ok(()))?;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`Reader`]: relay_reader::Reader

use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use signal_hook::iterator::Signals;

use relay_reader::Waker;

/// A stop flag raised by signals or by [`Stop::raise`], waking readers.
#[derive(Clone, Debug, Default)]
pub struct Stop {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    raised: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl Stop {
    /// A flag nothing raises but [`Stop::raise`].
    pub fn new() -> Stop {
        Stop::default()
    }

    /// A flag raised by any of `signals` (e.g. SIGINT, SIGTERM), from a
    /// thread that waits for them (signal-hook's iterator, so nothing but
    /// async-signal-safe code runs in the handler).
    pub fn on_signals(signals: &[c_int]) -> std::io::Result<Stop> {
        let stop = Stop::new();
        let mut waiting = Signals::new(signals)?;
        let raiser = stop.clone();
        std::thread::Builder::new()
            .name("relay-stop".into())
            .spawn(move || {
                for _ in waiting.forever() {
                    raiser.raise();
                }
            })?;
        Ok(stop)
    }

    /// A flag raised by SIGINT (Ctrl-C) or SIGTERM (kill): how a recording
    /// program is asked to stop.
    pub fn on_termination() -> std::io::Result<Stop> {
        Stop::on_signals(&[signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
    }

    /// Raises the flag and wakes every registered reader.
    pub fn raise(&self) {
        self.inner.raised.store(true, Ordering::SeqCst);
        for waker in self.wakers().iter() {
            // A failed wake-up leaves that reader to its timeout.
            let _ = waker.wake();
        }
    }

    /// True once a signal came or [`Stop::raise`] was called.
    pub fn is_raised(&self) -> bool {
        self.inner.raised.load(Ordering::SeqCst)
    }

    /// Wakes `waker` when the flag is raised (at once if it already is).
    pub fn wake_on_stop(&self, waker: Waker) {
        let mut wakers = self.wakers();
        // Checked under the lock `raise` takes after setting the flag: a
        // raise either sees this waker or happened before this check.
        if self.is_raised() {
            let _ = waker.wake();
        }
        wakers.push(waker);
    }

    fn wakers(&self) -> std::sync::MutexGuard<'_, Vec<Waker>> {
        // A panic while holding the lock cannot leave the list inconsistent.
        self.inner
            .wakers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_reader::Waiter;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Waits in another thread for an hour at most; tells when it returned.
    fn wait_in_thread(stop: &Stop) -> mpsc::Receiver<()> {
        let mut waiter = Waiter::new().unwrap();
        stop.wake_on_stop(waiter.waker());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            waiter.wait(Duration::from_secs(3600)).unwrap();
            let _ = tx.send(());
        });
        rx
    }

    // A missed wake-up would leave the waiter asleep for an hour: a minute
    // without return is a failure, not a slow machine.
    const NO_WAKE_UP: Duration = Duration::from_secs(60);

    #[test]
    fn raise_wakes_a_waiter_blocked_on_a_long_timeout() {
        let stop = Stop::new();
        let returned = wait_in_thread(&stop);
        assert!(!stop.is_raised());
        stop.raise();
        returned
            .recv_timeout(NO_WAKE_UP)
            .expect("raise() did not wake the waiting reader");
        assert!(stop.is_raised());
    }

    #[test]
    fn a_waker_registered_after_the_raise_is_woken_at_once() {
        let stop = Stop::new();
        stop.raise();
        wait_in_thread(&stop)
            .recv_timeout(NO_WAKE_UP)
            .expect("a reader registered after raise() was not woken");
    }

    #[test]
    fn a_signal_raises_the_flag_and_wakes() {
        // SIGUSR2: nothing else in this test binary uses it.
        let stop = Stop::on_signals(&[signal_hook::consts::SIGUSR2]).unwrap();
        let returned = wait_in_thread(&stop);
        signal_hook::low_level::raise(signal_hook::consts::SIGUSR2).unwrap();
        returned
            .recv_timeout(NO_WAKE_UP)
            .expect("SIGUSR2 did not wake the waiting reader");
        assert!(stop.is_raised());
    }
}
