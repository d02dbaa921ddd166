//! Finding the buffer files of a channel: `<base>0`, `<base>1`, ... one per
//! CPU, or one global buffer `<base>0`, or a single relay file given by path.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Where debugfs is mounted, and relay channels are found, by convention.
pub const DEBUGFS: &str = "/sys/kernel/debug";

/// One buffer file of a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferFile {
    /// CPU number taken from the file name (0 for a single file).
    pub cpu: u32,
    /// The file.
    pub path: PathBuf,
}

/// Parses a sysfs CPU list such as `0-3,5,7-8`.
pub fn parse_cpu_list(list: &str) -> Vec<u32> {
    let mut cpus = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(lo), Ok(hi)) = (lo.trim().parse::<u32>(), hi.trim().parse::<u32>()) {
            cpus.extend(lo..=hi);
        }
    }
    cpus
}

/// CPUs that may ever have a buffer (`/sys/devices/system/cpu/possible`).
pub fn possible_cpus() -> Vec<u32> {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .map(|s| parse_cpu_list(&s))
        .unwrap_or_else(|_| {
            (0..std::thread::available_parallelism().map_or(1, |n| n.get() as u32)).collect()
        })
}

/// CPUs online now (`/sys/devices/system/cpu/online`); empty where that
/// file cannot be read.
pub fn online_cpus() -> Vec<u32> {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .map(|s| parse_cpu_list(&s))
        .unwrap_or_default()
}

/// Whether a file system of type `fstype` (`debugfs`, `tracefs`) is mounted
/// at `dir`, from `/proc/self/mounts`; true when that cannot be read, so
/// that the caller's own error (a missing file) is the one shown.
pub fn is_mounted(dir: &Path, fstype: &str) -> bool {
    std::fs::read_to_string("/proc/self/mounts").map_or(true, |mounts| {
        mounts.lines().any(|l| {
            let mut fields = l.split_whitespace();
            fields.nth(1).map(Path::new) == Some(dir) && fields.next() == Some(fstype)
        })
    })
}

/// The buffer files of the channel at `base`: `base` itself if it is a file,
/// otherwise every existing `<base><cpu>` for the possible CPUs.
pub fn buffer_files(base: &Path) -> Result<Vec<BufferFile>> {
    if base.is_file() {
        let cpu = base
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| n.trim_start_matches(|c: char| !c.is_ascii_digit()))
            .and_then(|digits| digits.parse().ok())
            .unwrap_or(0);
        return Ok(vec![BufferFile {
            cpu,
            path: base.into(),
        }]);
    }
    let files: Vec<BufferFile> = possible_cpus()
        .into_iter()
        .map(|cpu| BufferFile {
            cpu,
            path: PathBuf::from(format!("{}{cpu}", base.display())),
        })
        .filter(|f| f.path.exists())
        .collect();
    if !files.is_empty() {
        return Ok(files);
    }
    if base.starts_with(DEBUGFS) && !is_mounted(Path::new(DEBUGFS), "debugfs") {
        return Err(Error::DebugfsNotMounted { path: base.into() });
    }
    if let Some(parent) = base.parent().filter(|p| !p.as_os_str().is_empty()) {
        match std::fs::read_dir(parent) {
            // A missing directory is a channel that was never created.
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(parent, "list directory", e));
            }
            _ => {}
        }
    }
    Err(Error::ChannelNotFound { path: base.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,5,7-8\n"), vec![0, 1, 2, 3, 5, 7, 8]);
        assert_eq!(parse_cpu_list("0\n"), vec![0]);
        assert_eq!(parse_cpu_list(""), Vec::<u32>::new());
    }

    #[test]
    fn missing_channel_is_named() {
        let dir = std::env::temp_dir().join(format!("relay-chan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = buffer_files(&dir.join("cpu")).unwrap_err();
        assert!(matches!(err, Error::ChannelNotFound { .. }), "{err}");
        let err = buffer_files(&dir.join("no-such-dir/cpu")).unwrap_err();
        assert!(matches!(err, Error::ChannelNotFound { .. }), "{err}");
        std::fs::write(dir.join("cpu0"), b"x").unwrap();
        let files = buffer_files(&dir.join("cpu")).unwrap();
        assert_eq!(
            files,
            vec![BufferFile {
                cpu: 0,
                path: dir.join("cpu0")
            }]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
