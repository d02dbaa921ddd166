//! Finding relay channels under debugfs and reading what can be known of
//! them without consuming anything.
//!
//! A channel is recognised, in this order, by:
//! 1. **the relay ABI**: its buffer file answers `RELAY_IOC_GET_INFO`
//!    (a kernel with the relay series, or a `relay_app` channel);
//! 2. **relay-apps control files**: `<file>.produced` beside the buffer file;
//! 3. **a known in-tree name**: blktrace's `trace<cpu>` beside `dropped` and
//!    `msg`, i915's `guc_log0` beside `guc_log_relay`, ath9k/10k/11k's
//!    `spectral_scan0` beside `spectral_scan_ctl`, mt76's `fwlog_data`,
//!    t7xx's `relay_ch0`, iosm's `trace0` beside `trace_ctrl`;
//! 4. **a `<base>N` family**: files `<base>0 .. <base>N-1`, one per CPU,
//!    each with mode 0400, the mode relay gives every buffer file (shown as
//!    unconfirmed: nothing but the names says it is relay).
//!
//! Only files named `<base><number>` (or `fwlog_data`) whose mode is 0400 or
//! that have relay-apps control files are ever opened, and only to ask the
//! ioctl; nothing is read from a buffer file, since read(2) would consume.

use std::collections::BTreeMap;
use std::fs::{File, Metadata, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use relay_reader::kernel::{query_info, query_state};
use relay_reader::mapped::{BufInfo, BufState};
use relay_reader::source::{has_control_files, relay_app_state};
use serde::Serialize;

/// How deep below the debugfs root the scan goes.
const MAX_DEPTH: usize = 12;

/// Directories at the debugfs root that are skipped: `tracing` is tracefs
/// automounted, thousands of event directories and no relay files.
const SKIPPED_AT_ROOT: &[&str] = &["tracing"];

/// In-tree relay users recognisable by name: (kind, buffer base name,
/// sibling files that must exist, one global buffer).
const KNOWN: &[(&str, &str, &[&str], bool)] = &[
    ("blktrace", "trace", &["dropped", "msg"], false),
    ("i915-guc-log", "guc_log", &["guc_log_relay"], true),
    (
        "ath-spectral",
        "spectral_scan",
        &["spectral_scan_ctl"],
        true,
    ),
    ("mt76-fwlog", "fwlog_data", &[], true),
    ("t7xx-trace", "relay_ch", &[], true),
    ("iosm-trace", "trace", &["trace_ctrl"], true),
];

/// Buffer files without a CPU number (their client's create_buf_file
/// callback picks the name).
const UNNUMBERED: &[&str] = &["fwlog_data"];

/// What was found: one relay channel.
#[derive(Debug, Clone, Serialize)]
pub struct Channel {
    /// `<dir>/<base>`: the path relay-reader takes (`<base>0`, `<base>1`, ...).
    pub base: PathBuf,
    /// Who made it: `relay-app`, `blktrace`, `i915-guc-log`, ..., `relay`
    /// (answers the ABI, client unknown) or `unconfirmed` (names only).
    pub kind: &'static str,
    /// How it was recognised: `relay-abi`, `relay-app-control-files`,
    /// `known-name`, `cpu-family`.
    pub recognised_by: Vec<&'static str>,
    /// One buffer for all CPUs, when known.
    pub global: Option<bool>,
    /// Bytes per sub-buffer, when known.
    pub subbuf_size: Option<u64>,
    /// Sub-buffers per buffer, when known.
    pub n_subbufs: Option<u64>,
    /// Overwrite (flight recorder) mode, when known.
    pub overwrite: Option<bool>,
    /// The channel's own `dropped` file (blktrace: events dropped while
    /// full; relay-apps: writes dropped), when it has one.
    pub dropped: Option<u64>,
    /// The buffers, in CPU order.
    pub buffers: Vec<Buffer>,
}

/// One buffer file of a channel.
#[derive(Debug, Clone, Serialize)]
pub struct Buffer {
    /// CPU (0 for a global buffer).
    pub cpu: u32,
    /// The buffer file.
    pub path: PathBuf,
    /// The file size, which relay keeps at the bytes produced in finished
    /// sub-buffers (padding excluded); readers do not lower it.
    pub size: u64,
    /// Where the counters below come from: `relay-abi` or
    /// `relay-app-control-files`; absent when nothing tells.
    pub counters_from: Option<&'static str>,
    /// Sub-buffers produced.
    pub produced: Option<u64>,
    /// Sub-buffers consumed.
    pub consumed: Option<u64>,
    /// Sub-buffers produced and not yet consumed.
    pub backlog: Option<u64>,
    /// Bytes in the sub-buffer being filled.
    pub write_offset: Option<u64>,
    /// Writes dropped because the buffer was full.
    pub lost_full: Option<u64>,
    /// Writes dropped because they were larger than a sub-buffer.
    pub lost_toobig: Option<u64>,
    /// Sub-buffers overwritten before they were consumed.
    pub lost_overwritten: Option<u64>,
    /// The channel was closed; what is left can still be read.
    pub finalized: Option<bool>,
    /// Why the counters could not be read, if they could not.
    pub error: Option<String>,
}

/// Splits `trace12` into `("trace", 12)`; `None` without a trailing number
/// or with a leading zero (`cpu01` is not a CPU file).
pub fn split_cpu_suffix(name: &str) -> Option<(&str, u32)> {
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit());
    let digits = &name[base.len()..];
    if base.is_empty() || digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
        return None;
    }
    Some((base, digits.parse().ok()?))
}

/// One directory's regular files: name -> metadata.
type Files = BTreeMap<String, Metadata>;

/// relay creates every buffer file with `S_IRUSR`.
fn relay_mode(meta: &Metadata) -> bool {
    meta.mode() & 0o7777 == 0o400
}

/// Opens a candidate buffer file to ask it ioctls (never to read it).
fn open_quietly(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
}

/// Finds every channel under `root`.
pub fn scan(root: &Path, cpus: &[u32]) -> std::io::Result<Vec<Channel>> {
    let mut channels = Vec::new();
    walk(root, 0, cpus, &mut channels)?;
    channels.sort_by(|a, b| a.base.cmp(&b.base));
    Ok(channels)
}

fn walk(dir: &Path, depth: usize, cpus: &[u32], out: &mut Vec<Channel>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        // The root must be readable; below it, a directory that vanished or
        // refuses us (a driver's private one) is skipped.
        Err(_) if depth > 0 => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut files = Files::new();
    let mut subdirs = Vec::new();
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        if meta.is_dir() {
            if !(depth == 0 && SKIPPED_AT_ROOT.contains(&name.as_str())) {
                subdirs.push(entry.path());
            }
        } else if meta.is_file() {
            files.insert(name, meta);
        }
    }
    out.extend(channels_in(dir, &files, cpus));
    if depth < MAX_DEPTH {
        subdirs.sort();
        for sub in subdirs {
            walk(&sub, depth + 1, cpus, out)?;
        }
    }
    Ok(())
}

/// The channels among the files of one directory.
fn channels_in(dir: &Path, files: &Files, cpus: &[u32]) -> Vec<Channel> {
    // base name -> cpu -> file name
    let mut families: BTreeMap<&str, BTreeMap<u32, &str>> = BTreeMap::new();
    for (name, meta) in files {
        let app = files.contains_key(&format!("{name}.produced"));
        if !(relay_mode(meta) || app) {
            continue;
        }
        if let Some((base, cpu)) = split_cpu_suffix(name) {
            families.entry(base).or_default().insert(cpu, name);
        } else if UNNUMBERED.contains(&name.as_str()) {
            families.entry(name).or_default().insert(0, name);
        }
    }
    families
        .into_iter()
        .filter_map(|(base, members)| classify(dir, base, &members, files, cpus))
        .collect()
}

fn known_kind(base: &str, files: &Files) -> Option<(&'static str, bool)> {
    KNOWN
        .iter()
        .find(|(_, b, siblings, _)| *b == base && siblings.iter().all(|s| files.contains_key(*s)))
        .map(|&(kind, _, _, global)| (kind, global))
}

fn classify(
    dir: &Path,
    base: &str,
    members: &BTreeMap<u32, &str>,
    files: &Files,
    cpus: &[u32],
) -> Option<Channel> {
    let first = dir.join(members.values().next()?);
    let app = members
        .values()
        .any(|name| has_control_files(&dir.join(name)));
    let info = open_quietly(&first)
        .ok()
        .and_then(|f| query_info(&f, &first).ok().flatten());
    let known = known_kind(base, files);
    // Buffer files one per CPU: 0..N-1 with N the CPUs that may have one.
    let numbers: Vec<u32> = members.keys().copied().collect();
    let per_cpu_family = numbers.len() >= 2
        && numbers.iter().all(|n| cpus.contains(n))
        && numbers.iter().copied().eq(0..numbers.len() as u32);
    let mut recognised_by = Vec::new();
    if info.is_some() {
        recognised_by.push("relay-abi");
    }
    if app {
        recognised_by.push("relay-app-control-files");
    }
    if known.is_some() {
        recognised_by.push("known-name");
    }
    if recognised_by.is_empty() {
        if !per_cpu_family {
            return None;
        }
        recognised_by.push("cpu-family");
    }
    let kind = match (known, app, info.is_some()) {
        (Some((kind, _)), _, _) => kind,
        (None, true, _) => "relay-app",
        (None, false, true) => "relay",
        (None, false, false) => "unconfirmed",
    };
    let mut channel = Channel {
        base: dir.join(base),
        kind,
        recognised_by,
        global: info.map(|i| i.global).or(known.map(|k| k.1)),
        subbuf_size: None,
        n_subbufs: None,
        overwrite: None,
        dropped: None,
        buffers: Vec::new(),
    };
    for (&cpu, name) in members {
        let path = dir.join(name);
        let size = files.get(*name).map_or(0, Metadata::len);
        let (buffer, geometry) = buffer(cpu, path, size, info.is_some(), app);
        if let Some(g) = geometry {
            channel.subbuf_size = channel.subbuf_size.or(Some(g.subbuf_size));
            channel.n_subbufs = channel.n_subbufs.or(Some(g.n_subbufs));
            if info.is_some() {
                channel.overwrite = channel.overwrite.or(Some(g.overwrite));
            }
        }
        channel.buffers.push(buffer);
    }
    if matches!(kind, "blktrace" | "relay-app") && files.contains_key("dropped") {
        channel.dropped = std::fs::read_to_string(dir.join("dropped"))
            .ok()
            .and_then(|t| t.trim().parse().ok());
    }
    Some(channel)
}

/// Counters of one buffer: through the ABI, else the relay-apps control
/// files, else only its size.
fn buffer(cpu: u32, path: PathBuf, size: u64, abi: bool, app: bool) -> (Buffer, Option<BufInfo>) {
    let mut b = Buffer {
        cpu,
        path,
        size,
        counters_from: None,
        produced: None,
        consumed: None,
        backlog: None,
        write_offset: None,
        lost_full: None,
        lost_toobig: None,
        lost_overwritten: None,
        finalized: None,
        error: None,
    };
    let fill = |b: &mut Buffer, s: &BufState| {
        b.produced = Some(s.produced);
        b.consumed = Some(s.consumed);
        b.backlog = Some(s.produced.saturating_sub(s.consumed));
    };
    if abi {
        let answer = open_quietly(&b.path)
            .map_err(|e| e.to_string())
            .and_then(|f| {
                let info = query_info(&f, &b.path).map_err(|e| e.to_string())?;
                let state = query_state(&f, &b.path).map_err(|e| e.to_string())?;
                Ok(info.zip(state))
            });
        match answer {
            Ok(Some((info, s))) => {
                b.counters_from = Some("relay-abi");
                fill(&mut b, &s);
                b.write_offset = Some(s.write_offset);
                b.lost_full = Some(s.lost_full);
                b.lost_toobig = Some(s.lost_toobig);
                b.lost_overwritten = Some(s.lost_overwritten);
                b.finalized = Some(s.finalized);
                return (b, Some(info));
            }
            Ok(None) => b.error = Some("the file stopped answering the relay ABI".into()),
            Err(e) => b.error = Some(e),
        }
    }
    if app {
        match relay_app_state(&b.path, cpu) {
            Ok((info, s)) => {
                b.counters_from = Some("relay-app-control-files");
                b.error = None;
                fill(&mut b, &s);
                return (b, Some(info));
            }
            Err(e) => b.error = Some(e.to_string()),
        }
    }
    (b, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn cpu_suffixes() {
        assert_eq!(split_cpu_suffix("trace0"), Some(("trace", 0)));
        assert_eq!(split_cpu_suffix("cpu15"), Some(("cpu", 15)));
        assert_eq!(
            split_cpu_suffix("spectral_scan0"),
            Some(("spectral_scan", 0))
        );
        assert_eq!(split_cpu_suffix("cpu01"), None);
        assert_eq!(split_cpu_suffix("dropped"), None);
        assert_eq!(split_cpu_suffix("12"), None);
        assert_eq!(split_cpu_suffix("cpu0.produced"), None);
    }

    fn file(dir: &Path, name: &str, mode: u32, bytes: usize) {
        let path = dir.join(name);
        std::fs::write(&path, vec![b'x'; bytes]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Regular files stand in for debugfs here: no ioctl answers, so only
    /// names, modes and control files can recognise a channel.
    #[test]
    fn families_known_names_and_control_files() {
        let root = std::env::temp_dir().join(format!("relay-stat-scan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        // blktrace: trace0, trace1 beside dropped and msg.
        let blk = root.join("block/sda");
        std::fs::create_dir_all(&blk).unwrap();
        file(&blk, "trace0", 0o400, 480);
        file(&blk, "trace1", 0o400, 96);
        file(&blk, "msg", 0o200, 0);
        std::fs::write(blk.join("dropped"), "7\n").unwrap();
        // relay-apps: cpu0/cpu1 with control files.
        let app = root.join("app");
        std::fs::create_dir_all(&app).unwrap();
        file(&app, "cpu0", 0o400, 0);
        file(&app, "cpu1", 0o400, 0);
        std::fs::write(app.join("subbuf_size"), "4096\n").unwrap();
        std::fs::write(app.join("n_subbufs"), "4\n").unwrap();
        for (cpu, produced, consumed) in [(0usize, 5usize, 3usize), (1, 2, 2)] {
            std::fs::write(
                app.join(format!("cpu{cpu}.produced")),
                produced.to_ne_bytes(),
            )
            .unwrap();
            std::fs::write(
                app.join(format!("cpu{cpu}.consumed")),
                consumed.to_ne_bytes(),
            )
            .unwrap();
        }
        std::fs::write(app.join("dropped"), "0\n").unwrap();
        // A family of 0400 files, one per CPU: unconfirmed.
        let fam = root.join("drv");
        std::fs::create_dir_all(&fam).unwrap();
        file(&fam, "log0", 0o400, 1);
        file(&fam, "log1", 0o400, 1);
        // Not channels: wrong mode, single numbered file, gap in numbering.
        file(&fam, "regs0", 0o444, 1);
        file(&fam, "regs1", 0o444, 1);
        file(&fam, "single0", 0o400, 1);
        file(&fam, "gap0", 0o400, 1);
        file(&fam, "gap2", 0o400, 1);
        // Skipped at the root.
        std::fs::create_dir_all(root.join("tracing")).unwrap();
        file(&root.join("tracing"), "t0", 0o400, 1);
        file(&root.join("tracing"), "t1", 0o400, 1);

        let channels = scan(&root, &[0, 1]).unwrap();
        let bases: Vec<String> = channels
            .iter()
            .map(|c| c.base.strip_prefix(&root).unwrap().display().to_string())
            .collect();
        assert_eq!(bases, ["app/cpu", "block/sda/trace", "drv/log"]);

        let app = &channels[0];
        assert_eq!(app.kind, "relay-app");
        assert_eq!(app.recognised_by, ["relay-app-control-files"]);
        assert_eq!((app.subbuf_size, app.n_subbufs), (Some(4096), Some(4)));
        assert_eq!(app.dropped, Some(0));
        assert_eq!(app.buffers[0].backlog, Some(2));
        assert_eq!(app.buffers[1].produced, Some(2));

        let blk = &channels[1];
        assert_eq!(blk.kind, "blktrace");
        assert_eq!(blk.recognised_by, ["known-name"]);
        assert_eq!(blk.dropped, Some(7));
        assert_eq!(blk.global, Some(false));
        let sizes: Vec<u64> = blk.buffers.iter().map(|b| b.size).collect();
        assert_eq!(sizes, [480, 96]);
        assert_eq!(blk.buffers[0].produced, None);

        let fam = &channels[2];
        assert_eq!(fam.kind, "unconfirmed");
        assert_eq!(fam.recognised_by, ["cpu-family"]);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
