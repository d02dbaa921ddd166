//! Record Linux relay channels with [`relay_reader`]: the loop every
//! recording program needs, written once.
//!
//! [`Recording`] finds a channel's buffers, resolves the read mode, reads
//! every buffer with a thread pinned to its CPU (or one thread for all),
//! picks up buffers of CPUs that come online, stops on signals ([`stop`]),
//! a duration, a size limit or the channel's close, saves the partly filled
//! sub-buffers on the way out, writes into [`sink`]s (per-CPU files with
//! rotation, one file, stdout, or your own), and ends with a serializable
//! [`Summary`]. `relay-reader record`, `relay-klog`, `relay-blktrace` and the
//! relay-apps example programs are all built on it.
//!
//! ```no_run
//! use relay_recorder::{stop::Stop, Output, Recording};
//!
//! let stop = Stop::on_signals(&[signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
//! let outcome = Recording::new("/sys/kernel/debug/relay_klog/cpu")
//!     .output(Output::Stdout)
//!     .stop(&stop)
//!     .run()?;
//! eprintln!("{}", outcome.summary.to_json());
//! outcome.result?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod error;
mod idle;
mod pinned;
pub mod realtime;
mod recording;
pub mod sink;
pub mod stop;
mod summary;

pub use error::{Error, Result};
pub use pinned::SinkFactory;
pub use recording::{Outcome, Output, Recording, Running, Scheduling, Threads};
pub use summary::{or_dash, CpuSummary, Summary};
