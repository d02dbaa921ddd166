//! Waiting for any buffer of a channel with `polling`.
//!
//! # Safety
//!
//! `polling` asks callers to promise that a registered fd is deregistered
//! before it is closed; this module keeps that promise by owning the
//! registration: [`Waiter::add`] is paired with [`Waiter::remove`], which the
//! reader calls before dropping a source.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use polling::{Event, Events, PollMode, Poller};

/// A poller over the fds of a channel's buffers, keyed by buffer index.
#[derive(Debug)]
pub struct Waiter {
    poller: Arc<Poller>,
    events: Events,
}

impl Waiter {
    /// A new, empty poller.
    pub fn new() -> std::io::Result<Self> {
        Ok(Waiter {
            poller: Arc::new(Poller::new()?),
            events: Events::new(),
        })
    }

    /// Watches `fd` for readability (relay: a sub-buffer is ready) under `key`.
    pub fn add(&self, fd: BorrowedFd<'_>, key: usize) -> std::io::Result<()> {
        // SAFETY: the reader removes the fd (`remove`) before the source that
        // owns it is dropped, so the poller never holds a closed fd.
        unsafe {
            self.poller
                .add_with_mode(&fd, Event::readable(key), PollMode::Level)
        }
    }

    /// Stops watching `fd`.
    pub fn remove(&self, fd: BorrowedFd<'_>) -> std::io::Result<()> {
        self.poller.delete(fd)
    }

    /// Waits up to `timeout` and returns the ready keys, each with whether
    /// poll reported an error (relay: POLLERR once the channel was closed).
    /// Sources are registered level-triggered, like relay's poll: a buffer
    /// stays ready until its sub-buffers are consumed, and no re-arming
    /// syscall is needed after each wake-up.
    pub fn wait(&mut self, timeout: Duration) -> std::io::Result<Vec<(usize, bool)>> {
        self.events.clear();
        self.poller.wait(&mut self.events, Some(timeout))?;
        Ok(self
            .events
            .iter()
            .map(|e| (e.key, e.is_err().unwrap_or(false)))
            .collect())
    }

    /// Wakes a thread blocked in [`Waiter::wait`].
    pub fn notify(&self) -> std::io::Result<()> {
        self.poller.notify()
    }

    /// A handle that wakes this waiter from any thread.
    pub fn waker(&self) -> Waker {
        Waker {
            poller: Arc::clone(&self.poller),
        }
    }
}

/// Wakes a [`Waiter`] (and so a [`Reader::poll`]) from another thread, for
/// stopping a reader at once instead of checking a flag on a short timeout.
/// A wake-up that comes while nobody waits makes the next wait return
/// at once, so none is lost.
///
/// [`Reader::poll`]: crate::Reader::poll
#[derive(Clone, Debug)]
pub struct Waker {
    poller: Arc<Poller>,
}

impl Waker {
    /// Makes the waiting (or the next) wait return.
    pub fn wake(&self) -> std::io::Result<()> {
        self.poller.notify()
    }
}

impl AsRawFd for Waiter {
    fn as_raw_fd(&self) -> RawFd {
        self.poller.as_raw_fd()
    }
}

impl AsFd for Waiter {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.poller.as_fd()
    }
}
