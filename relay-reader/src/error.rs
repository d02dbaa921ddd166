//! Errors of the reader library: each names the path it concerns and, where
//! there is one, the fix.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while opening or reading a relay channel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// debugfs is not mounted where the channel was looked for.
    #[error(
        "{path}: debugfs is not mounted; mount it with `mount -t debugfs none /sys/kernel/debug`"
    )]
    DebugfsNotMounted {
        /// The path that was asked for.
        path: PathBuf,
    },
    /// No relay buffer file matches the channel path.
    #[error("{path}: no relay buffer files `{path}0`, `{path}1`, ... (is the module that creates the channel loaded?)")]
    ChannelNotFound {
        /// The channel base path.
        path: PathBuf,
    },
    /// The file exists but is not a relay buffer file.
    #[error("{path}: not a relay buffer file ({why})")]
    NotRelayFile {
        /// The file.
        path: PathBuf,
        /// What gave it away.
        why: String,
    },
    /// Opening or mapping needs privileges the process lacks.
    #[error(
        "{path}: permission denied; relay files in debugfs are readable by root only, run as root"
    )]
    PermissionDenied {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The mmap mode was asked for but the file does not offer the relay ABI.
    #[error("{path}: the file does not offer the relay mmap ABI (it needs a kernel with the relay series or a relay_app channel); read(2) still reads it")]
    NoAbi {
        /// The file.
        path: PathBuf,
    },
    /// The relay-app mode was asked for on a channel in overwrite mode,
    /// whose laps that protocol cannot detect.
    #[error("{path}: the channel is in overwrite mode, where the relay-app protocol cannot tell a sub-buffer the writer overwrote while it was read; the mmap ABI can")]
    RelayAppOverwrite {
        /// The file.
        path: PathBuf,
    },
    /// A relay-apps channel read with its padding-word size left to
    /// detection, whose sub-buffers so far fit both sizes.
    #[error("{path}: cannot tell whether the padding words are 4 or 8 bytes from the sub-buffers so far (the words of all {subbufs} in the channel's buffers fit both sizes); choose one")]
    PaddingWordUnknown {
        /// The buffer that was to deliver data.
        path: PathBuf,
        /// How many sub-buffers of the channel's buffers were looked at.
        subbufs: u64,
    },
    /// The kernel refused to map the buffer.
    #[error("{path}: mmap of the relay buffer failed; a file created with debugfs_create_file() cannot be mapped (ENODEV), read(2) still reads it")]
    Map {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The kernel answered with something the ABI rules out.
    #[error("{path}: inconsistent relay state from the kernel: {what}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
    /// Any other I/O error on a path.
    #[error("{path}: {op}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Handing data on failed: a callback's destination (a file on a full
    /// disk, a closed pipe, ...).
    #[error("writing to {target}: {source}")]
    Sink {
        /// Where the data was going.
        target: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Wraps an I/O error on `path`, turning EACCES/EPERM into [`Error::PermissionDenied`].
    pub fn io(path: impl Into<PathBuf>, op: &'static str, source: io::Error) -> Self {
        let path = path.into();
        match source.kind() {
            io::ErrorKind::PermissionDenied => Error::PermissionDenied { path, source },
            _ => Error::Io { path, op, source },
        }
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
