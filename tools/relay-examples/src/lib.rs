//! The little the relay-apps example programs share: a recording that
//! stops on a signal or after `-w`, and the text control files of their kernel modules. Each example is one
//! file under `src/bin/`, next to its module in
//! `kernel-patches/src/samples/relay/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use relay_recorder::stop::Stop;
use relay_recorder::Recording;

/// A stop raised by SIGINT or SIGTERM.
pub fn stop_on_signals() -> Result<Stop> {
    Stop::on_termination().context("installing signal handlers")
}

/// A recording of `channel` (see [`relay_recorder::Recording`]) that ends
/// when `stop` is raised, or after `-w SECONDS` when given.
pub fn recording(
    channel: impl Into<PathBuf>,
    seconds: Option<f64>,
    stop: &Stop,
) -> Result<Recording> {
    let mut recording = Recording::new(channel).stop(stop);
    if let Some(s) = seconds {
        recording = recording.duration(
            Duration::try_from_secs_f64(s).with_context(|| format!("-w {s}: not a duration"))?,
        );
    }
    Ok(recording)
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
