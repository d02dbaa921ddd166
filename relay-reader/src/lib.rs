//! Read Linux relay channels (`kernel/relay.c`) from user space, correctly:
//! padding stripped, consumption told to the kernel, losses counted, and the
//! partly filled last sub-buffer taken when a recording stops.
//!
//! Three ways to read, behind one [`Reader`] that hands out sub-buffers
//! through callbacks ([`SubBuf`]) or one at a time ([`Reader::next`],
//! [`SubBufGuard`]):
//! - **mmap** through the relay ioctl ABI (`include/uapi/linux/relay.h`, from
//!   the kernel series or the `relay_app` sample helper on stock kernels):
//!   zero-copy, padding known from the kernel, overwrite laps detected; where
//!   the kernel maps a meta area after the buffer, counters and sub-buffer
//!   locations are read from it and a drain makes one system call
//!   (`RELAY_IOC_CONSUME`) for everything it read;
//! - **relay-app**: mmap with the relay-apps 0.9x control files
//!   (`cpuN.produced`, `cpuN.consumed`) and the padding word at the head of
//!   each sub-buffer (4 or 8 bytes: chosen, or detected, see
//!   [`PaddingWord`]), for channels made that way without the ABI;
//! - **read(2)** on any relay file: the kernel strips padding and consumes.
//!
//! ```no_run
//! use relay_reader::{Mode, Reader};
//! use std::time::Duration;
//!
//! let mut reader = Reader::open("/sys/kernel/debug/relay_klog/cpu", Mode::Auto)?;
//! // Pulling: wait, then take what is ready; each sub-buffer goes back to
//! // the kernel once dropped.
//! reader.wait(Duration::from_millis(100))?;
//! while let Some(sb) = reader.next()? {
//!     println!("cpu {} sub-buffer {}: {} bytes", sb.cpu(), sb.seq(), sb.len());
//! }
//! // Or callbacks: wait and deliver in one call.
//! reader.poll(Duration::from_millis(100), &mut |sb| {
//!     println!("cpu {} sub-buffer {}: {} bytes", sb.cpu, sb.seq, sb.data.len());
//!     Ok(())
//! })?;
//! # Ok::<(), relay_reader::Error>(())
//! ```
//!
//! The reading logic is tested without a kernel against [`model`], a faithful
//! model of relay's buffer logic. Recording (threads, stopping, limits, files)
//! is the `relay-recorder` crate's job, built on this one.
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod channel;
mod error;
pub mod kernel;
pub mod mapped;
pub mod meta;
pub mod model;
mod reader;
pub mod source;
mod subbuf;
mod wait;

pub use error::{Error, Result};
pub use mapped::BufState;
pub use reader::Reader;
pub use source::{Mode, OpenOptions, PaddingWord};
pub use subbuf::{BufStats, SubBuf, SubBufGuard};
pub use wait::{Waiter, Waker};
