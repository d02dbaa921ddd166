//! Errors of a recording: the reader's, and those of what the recorder
//! adds around it (scheduling, signals).

use std::io;

/// Everything that can go wrong while recording a channel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Opening or reading the channel, or writing to a sink, failed.
    #[error(transparent)]
    Reader(#[from] relay_reader::Error),
    /// The signal handlers that stop a recording could not be installed.
    #[error("installing the signal handlers that stop the recording: {0}")]
    Signals(#[source] io::Error),
    /// The reading thread could not be given a real-time priority.
    #[error("running the reader under SCHED_FIFO priority {priority}: {source}{}",
        if matches!(source.raw_os_error(), Some(libc::EPERM)) {
            "; this needs root, CAP_SYS_NICE or an RLIMIT_RTPRIO of at least the priority (ulimit -r)"
        } else if matches!(source.raw_os_error(), Some(libc::EINVAL)) {
            "; SCHED_FIFO priorities go from 1 to 99"
        } else {
            ""
        })]
    Realtime {
        /// The priority asked for.
        priority: u8,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The reading thread could not be given a scheduling slice.
    #[error("running the reader with a {} µs scheduling slice: {source}{}",
        slice.as_micros(),
        match source.raw_os_error() {
            Some(libc::EINVAL) => "; slices go from 100 µs to 100 ms",
            Some(libc::EOPNOTSUPP) => "; this kernel ignores custom slices of the normal policy (Linux 6.12 or later has them)",
            _ => "",
        })]
    Slice {
        /// The slice asked for.
        slice: std::time::Duration,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// The recorder's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
