//! The little the relay-apps example programs share: stopping on a signal
//! and the text control files of their kernel modules. Each example is one
//! file under `src/bin/`, next to its module in
//! `kernel-patches/src/samples/relay/`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

pub mod readtest;

/// A flag raised by SIGINT or SIGTERM: the programs record until then.
pub fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    Ok(stop)
}

/// When a recording ends: on SIGINT or SIGTERM, or after `-w SECONDS`.
#[derive(Debug)]
pub struct Until {
    stop: Arc<AtomicBool>,
    deadline: Option<Instant>,
}

impl Until {
    /// Until a signal, or `seconds` from now when given.
    pub fn new(seconds: Option<f64>) -> Result<Until> {
        let deadline = match seconds {
            Some(s) => Some(
                Instant::now()
                    + Duration::try_from_secs_f64(s)
                        .with_context(|| format!("-w {s}: not a duration"))?,
            ),
            None => None,
        };
        Ok(Until {
            stop: stop_flag()?,
            deadline,
        })
    }

    /// True once the recording should stop.
    pub fn done(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// Writes `value` to a module's control file.
pub fn write_control(path: impl AsRef<Path>, value: impl ToString) -> Result<()> {
    let path = path.as_ref();
    let value = value.to_string();
    std::fs::write(path, &value).with_context(|| format!("writing {value} to {}", path.display()))
}

/// Reads a number from a module's text control file.
pub fn read_control(path: impl AsRef<Path>) -> Result<u64> {
    let path = path.as_ref();
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{}: {text:?} is not a number", path.display()))
}

/// The hint for a channel that does not exist: which module to load.
pub fn load_hint(module: &str) -> String {
    format!("is the {module} module loaded? (insmod relay_app.ko; insmod {module}.ko)")
}
