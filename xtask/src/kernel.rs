//! The kernel patch series of `kernel-patches/series/<base>/`: building
//! kernels with them, checking that they carry `kernel-patches/src/`, and the
//! kernel matrix.
//!
//! `kernel-patches/scripts/build-kernel.sh` does the work of a build (verified
//! base tarball, git base, `git am`, slim config, ccache); this module runs it,
//! collects the in-tree modules for the VM tests and drives the matrix. The
//! series check reads the patch files only, so `cargo xtask test` runs it
//! without a kernel tree.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::setup::Tools;
use crate::vm::TestSelection;
use crate::{util, vm, VmArgs};

/// The base `cargo xtask test` builds and boots, the primary series (its
/// source, Debian's `linux-source-7.3` from trixie-backports, is downloaded
/// by build-kernel.sh), and the default of `cargo xtask kernel`.
pub const CI_BASE: &str = "7.3";

/// The base the kernel matrix builds with KASAN and lockdep for the stress
/// run (every base gets the plain build and the VM tests).
const STRESS_BASE: &str = CI_BASE;

/// Hard timeout of the stress run in the KASAN kernel, in seconds.
const STRESS_TIMEOUT: u64 = 2400;

/// Hard timeouts of the KCSAN kernel's stress run and VM tests, in seconds
/// (KCSAN's watchpoints slow every instrumented access down, under TCG).
const KCSAN_STRESS_TIMEOUT: u64 = 3600;
const KCSAN_VM_TEST_TIMEOUT: u64 = 3600;

/// Hard timeout of a foreign-architecture guest (boot-guest.sh), in seconds.
const GUEST_TIMEOUT: u64 = 3600;
/// The long exerciser run of the KASAN and KCSAN stages.
const EXERCISER_TIMEOUT: u64 = 5400;
/// How many times longer than in the VM tests the matrix runs the ABI
/// exerciser on the KASAN and KCSAN kernels (about 8 minutes under TCG).
pub const EXERCISER_SCALE: u32 = 40;

/// The VM tests, run by the matrix's caller (`xtask::test`, which builds
/// the test binaries): the kernel in the `VmArgs`, the modules' directory,
/// which binaries.
pub type VmTests<'a> = dyn Fn(&VmArgs, &Path, &TestSelection) -> Result<Option<String>> + 'a;

/// What a KCSAN report starts with in the kernel log.
const KCSAN_REPORT: &str = "BUG: KCSAN";

/// The kernels build-kernel.sh builds from a series: its options, build
/// directory and image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// x86-64, `build-vm`: the kernel of `cargo xtask test`.
    Vm,
    /// x86-64 with KASAN and lockdep (`--kasan`, `build-kasan`).
    Kasan,
    /// x86-64 with KCSAN (`--kcsan`, `build-kcsan`).
    Kcsan,
    /// arm64, cross-compiled (`--arch arm64`, `build-arm64`).
    Arm64,
    /// 32-bit x86 (`--arch i386`, `build-i386`).
    I386,
}

impl Variant {
    /// build-kernel.sh's options for it.
    fn script_args(self) -> &'static [&'static str] {
        match self {
            Variant::Vm => &[],
            Variant::Kasan => &["--kasan"],
            Variant::Kcsan => &["--kcsan"],
            Variant::Arm64 => &["--arch", "arm64"],
            Variant::I386 => &["--arch", "i386"],
        }
    }

    /// Its build directory under `.cache/kernel/<base>/`.
    fn dir(self) -> &'static str {
        match self {
            Variant::Vm => "build-vm",
            Variant::Kasan => "build-kasan",
            Variant::Kcsan => "build-kcsan",
            Variant::Arm64 => "build-arm64",
            Variant::I386 => "build-i386",
        }
    }

    /// The kernel image in the build directory.
    fn image(self) -> &'static str {
        match self {
            Variant::Arm64 => "arch/arm64/boot/Image",
            _ => "arch/x86/boot/bzImage",
        }
    }

    /// The architecture of a kernel that cannot run the host's (x86-64)
    /// user space, which kernel-patches/scripts/boot-guest.sh boots with a
    /// root of its own.
    pub fn foreign_arch(self) -> Option<&'static str> {
        match self {
            Variant::Arm64 => Some("arm64"),
            Variant::I386 => Some("i386"),
            _ => None,
        }
    }
}

/// A kernel built from a series.
pub struct Built {
    /// The series' base, e.g. `6.12`.
    pub base: String,
    /// What was built.
    pub variant: Variant,
    /// The kernel build directory (`O=`).
    pub build_dir: PathBuf,
    /// The kernel image in it: `arch/x86/boot/bzImage`, or
    /// `arch/arm64/boot/Image` for arm64.
    pub bzimage: PathBuf,
    /// Its release string.
    pub release: String,
}

fn series_dir(root: &Path) -> PathBuf {
    root.join("kernel-patches/series")
}

fn script(root: &Path, name: &str) -> PathBuf {
    root.join("kernel-patches/scripts").join(name)
}

/// The bases that have a series, oldest first.
pub fn bases(root: &Path) -> Result<Vec<String>> {
    let dir = series_dir(root);
    let mut bases: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().join("BASE").is_file())
        .filter_map(|entry| entry.file_name().to_str().map(str::to_string))
        .collect();
    bases.sort_by_key(|base| {
        base.split('.')
            .map(|part| part.parse::<u64>().unwrap_or(0))
            .collect::<Vec<_>>()
    });
    Ok(bases)
}

fn check_base(root: &Path, base: &str) -> Result<()> {
    let known = bases(root)?;
    if !known.iter().any(|b| b == base) {
        bail!(
            "no series for base {base:?} in {}: the bases are {}",
            series_dir(root).display(),
            known.join(", ")
        );
    }
    Ok(())
}

/// Applies the series of `base` to its verified base tree and builds it
/// (`--kasan`: with KASAN and lockdep). Idempotent; ccache makes rebuilds
/// cheap.
pub fn build(root: &Path, base: &str, kasan: bool) -> Result<Built> {
    build_variant(root, base, if kasan { Variant::Kasan } else { Variant::Vm })
}

/// [`build`] of any [`Variant`].
pub fn build_variant(root: &Path, base: &str, variant: Variant) -> Result<Built> {
    check_base(root, base)?;
    let mut cmd = Command::new("bash");
    cmd.arg(script(root, "build-kernel.sh"))
        .args(variant.script_args())
        .arg(base);
    let started = Instant::now();
    util::run(&mut cmd).with_context(|| {
        format!("building the {base} kernel ({variant:?}) failed: see the output above")
    })?;
    let cache = std::env::var_os("RELAY_KERNEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".cache/kernel"));
    let build_dir = cache.join(base).join(variant.dir());
    let bzimage = build_dir.join(variant.image());
    if !bzimage.is_file() {
        bail!("the build finished but {} is missing", bzimage.display());
    }
    let release = std::fs::read_to_string(build_dir.join("include/config/kernel.release"))
        .context("reading the built kernel's release")?
        .trim()
        .to_string();
    println!(
        "kernel: {release} built in {:.0} s: {}",
        started.elapsed().as_secs_f64(),
        bzimage.display()
    );
    Ok(Built {
        base: base.to_string(),
        variant,
        build_dir,
        bzimage,
        release,
    })
}

/// Whether `kdir` is a kernel build of one of the series (it built the
/// relay samples in tree).
pub fn is_series_build(kdir: &Path) -> bool {
    kdir.join("samples/relay/relay_app.ko").is_file()
}

/// Files a series build made that the VM tests use besides the relay
/// samples (every `samples/relay/*.ko`), copied to `target/modules/<release>/`.
const INTREE: &[&str] = &[
    "kernel/klog.ko",
    "drivers/block/null_blk/null_blk.ko",
    "lib/test_relay.ko",
    "relay_test",
    "relay_mmap",
    "relay_mmap.sh",
];

/// Copies the in-tree modules of a series build into
/// `target/modules/<release>/` and returns that directory.
pub fn intree_modules(root: &Path, kdir: &Path) -> Result<PathBuf> {
    let release = std::fs::read_to_string(kdir.join("include/config/kernel.release"))
        .with_context(|| format!("{} is not a configured kernel build", kdir.display()))?
        .trim()
        .to_string();
    let out = util::metadata(root)?
        .target_dir
        .join("modules")
        .join(&release);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let samples = kdir.join("samples/relay");
    let mut files: Vec<PathBuf> = INTREE.iter().map(|rel| kdir.join(rel)).collect();
    files.extend(
        std::fs::read_dir(&samples)
            .with_context(|| format!("reading {}", samples.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "ko")),
    );
    for from in &files {
        let name = from.file_name().context("module path without a name")?;
        if !from.is_file() {
            bail!(
                "{} is missing: the kernel was not built with kernel-patches/config/relay-vm.config",
                from.display()
            );
        }
        std::fs::copy(from, out.join(name))
            .with_context(|| format!("copying {} to {}", from.display(), out.display()))?;
    }
    for module in crate::modules::MODULES {
        if !out.join(format!("{module}.ko")).is_file() {
            bail!("the series build has no {module}.ko: is samples/relay/ enabled in its config?");
        }
    }
    println!(
        "modules: {} in-tree modules of {release} in {}",
        files.len() - 1,
        out.display()
    );
    Ok(out)
}

/// One file a patch creates: its path and content.
struct NewFile {
    patch: String,
    path: String,
    content: Vec<u8>,
}

/// What the patches of a series do to files.
struct SeriesFiles {
    /// The files they create.
    created: Vec<NewFile>,
    /// (patch, path) of every existing file they modify.
    modified: Vec<(String, String)>,
}

/// The companion series of a base, applied on top of its core series.
const COMPANION: &str = "companion";

/// The numbered patches of one series directory, in order.
fn patch_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut patches: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".patch") && !n.starts_with("0000-"))
        })
        .collect();
    patches.sort();
    Ok(patches)
}

/// The files that the patches of a series and of its companion series
/// create, and the paths they modify; patches are named relative to `dir`.
fn parse_series(dir: &Path) -> Result<SeriesFiles> {
    let mut patches = patch_files(dir)?;
    if patches.is_empty() {
        bail!("{} has no patches", dir.display());
    }
    if dir.join(COMPANION).is_dir() {
        patches.extend(patch_files(&dir.join(COMPANION))?);
    }
    let mut created = Vec::new();
    let mut modified = Vec::new();
    for patch in &patches {
        let name = patch
            .strip_prefix(dir)
            .unwrap_or(patch)
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read(patch).with_context(|| format!("reading {}", patch.display()))?;
        if !text
            .split(|&b| b == b'\n')
            .any(|line| line.starts_with(b"Signed-off-by: "))
        {
            bail!("{name}: no Signed-off-by line");
        }
        parse_patch(&name, &text, &mut created, &mut modified)?;
    }
    Ok(SeriesFiles { created, modified })
}

/// Reads the `diff --git` sections of one patch file.
fn parse_patch(
    name: &str,
    text: &[u8],
    created: &mut Vec<NewFile>,
    modified: &mut Vec<(String, String)>,
) -> Result<()> {
    let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    let mut i = 0;
    while i < lines.len() {
        let Some(rest) = lines[i].strip_prefix(b"diff --git a/") else {
            i += 1;
            continue;
        };
        let header = String::from_utf8_lossy(rest);
        let path = header
            .split_once(" b/")
            .map(|(a, _)| a.to_string())
            .with_context(|| format!("{name}: cannot read {:?}", header))?;
        i += 1;
        let mut new_file = false;
        while i < lines.len()
            && !lines[i].starts_with(b"@@")
            && !lines[i].starts_with(b"diff --git ")
        {
            new_file |= lines[i].starts_with(b"new file mode");
            i += 1;
        }
        if !new_file {
            modified.push((name.to_string(), path));
            continue;
        }
        // One hunk "@@ -0,0 +1,N @@" of N added lines (none for an empty file).
        let mut content = Vec::new();
        if i < lines.len() && lines[i].starts_with(b"@@") {
            let hunk = String::from_utf8_lossy(lines[i]).to_string();
            let count: usize = hunk
                .split_whitespace()
                .nth(2)
                .and_then(|plus| plus.strip_prefix('+'))
                .map(|range| range.split_once(',').map_or(range, |(_, n)| n))
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("{name}: {path}: bad hunk header {hunk:?}"))?;
            i += 1;
            for _ in 0..count {
                let line = lines
                    .get(i)
                    .and_then(|l| l.strip_prefix(b"+"))
                    .with_context(|| format!("{name}: {path}: truncated new file"))?;
                content.extend_from_slice(line);
                content.push(b'\n');
                i += 1;
            }
            if lines
                .get(i)
                .is_some_and(|l| l.starts_with(b"\\ No newline"))
            {
                content.pop();
                i += 1;
            }
        }
        created.push(NewFile {
            patch: name.to_string(),
            path,
            content,
        });
    }
    Ok(())
}

/// Every file of `kernel-patches/src/`, relative to it.
fn src_files(src: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut files = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let rel = path
                    .strip_prefix(src)
                    .context("path outside src")?
                    .to_string_lossy()
                    .into_owned();
                files.insert(rel, path);
            }
        }
    }
    Ok(files)
}

/// The version of `kernel-patches/src/<path>` that the series of `base`
/// carries (the kernel's side of its conditionals), from
/// `scripts/intree-file.sh`, which `series.sh sync` uses too.
fn intree_file(root: &Path, base: &str, path: &str) -> Result<Vec<u8>> {
    let text = util::output(
        Command::new("bash")
            .arg(script(root, "intree-file.sh"))
            .args([base, path]),
    )?;
    Ok(text.into_bytes())
}

/// Checks every series (each with its companion series): each file a patch
/// creates is, as the series leaves it, byte-identical to the version of
/// its copy under `kernel-patches/src/` that the series carries, every
/// file there is created by the series, and `BASE` pins a sha256.
pub fn check_series(root: &Path) -> Result<()> {
    let carried = src_files(&root.join("kernel-patches/src"))?;
    let bases = bases(root)?;
    if bases.is_empty() {
        bail!("no series in {}", series_dir(root).display());
    }
    let mut problems = Vec::new();
    for base in &bases {
        let dir = series_dir(root).join(base);
        let base_file = std::fs::read_to_string(dir.join("BASE"))?;
        let sha = base_file
            .lines()
            .find_map(|l| l.strip_prefix("SHA256="))
            .unwrap_or_default();
        if sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
            problems.push(format!(
                "series/{base}/BASE: no SHA256=<64 hex digits> line"
            ));
        }
        for (series, name) in [
            (dir.clone(), format!("series/{base}")),
            (dir.join(COMPANION), format!("series/{base}/{COMPANION}")),
        ] {
            if series.is_dir() && !series.join("0000-cover-letter.patch").is_file() {
                problems.push(format!("{name}: no 0000-cover-letter.patch"));
            }
        }
        let SeriesFiles { created, modified } = parse_series(&dir)?;
        // Each src file as the series leaves it: created by one patch,
        // possibly changed by later ones (series.sh sync puts src/'s
        // version into the last patch that touches a file).
        let mut last: BTreeMap<String, (String, Vec<u8>)> = BTreeMap::new();
        for file in &created {
            if carried.contains_key(&file.path) {
                last.insert(
                    file.path.clone(),
                    (file.patch.clone(), file.content.clone()),
                );
            } else {
                problems.push(format!(
                    "series/{base}/{}: creates {}, which is not in kernel-patches/src/",
                    file.patch, file.path
                ));
            }
        }
        for (patch, path) in &modified {
            let Some((at, content)) = last.get_mut(path) else {
                continue;
            };
            match apply_to_file(&dir.join(patch), path, content) {
                Ok(new) => {
                    *content = new;
                    at.clone_from(patch);
                }
                Err(err) => problems.push(format!(
                    "series/{base}/{patch}: its change of {path} does not apply: {err:#}"
                )),
            }
        }
        for path in carried.keys() {
            match last.get(path) {
                None => problems.push(format!(
                    "series/{base}: no patch creates kernel-patches/src/{path}"
                )),
                Some((patch, content)) => {
                    if *content != intree_file(root, base, path)? {
                        problems.push(format!(
                            "series/{base}/{patch}: {path} differs from kernel-patches/src/{path} \
                             as `kernel-patches/scripts/intree-file.sh {base} {path}` prints it"
                        ));
                    }
                }
            }
        }
        println!(
            "kernel series {base}: {} new files match kernel-patches/src/",
            created.len()
        );
    }
    if !problems.is_empty() {
        bail!(
            "the kernel series do not carry kernel-patches/src/:\n  {}\nafter changing \
             kernel-patches/src/, regenerate each series with \
             `kernel-patches/scripts/series.sh refresh <base>` (bases: {})",
            problems.join("\n  "),
            bases.join(", ")
        );
    }
    Ok(())
}

/// `content` (a file as created by earlier patches) with the change that
/// the patch file `patch` makes to `path`, applied by `git apply` in a
/// scratch directory.
fn apply_to_file(patch: &Path, path: &str, content: &[u8]) -> Result<Vec<u8>> {
    let scratch = std::env::temp_dir().join(format!(
        "xtask-series-{}-{}",
        std::process::id(),
        path.replace('/', "_")
    ));
    let file = scratch.join(path);
    std::fs::create_dir_all(file.parent().unwrap_or(&scratch))?;
    std::fs::write(&file, content)?;
    let out = Command::new("git")
        .arg("apply")
        .arg(format!("--include={path}"))
        .arg(patch)
        .current_dir(&scratch)
        .output()
        .context("running git apply")?;
    let result = if out.status.success() {
        std::fs::read(&file).map_err(Into::into)
    } else {
        Err(anyhow::anyhow!(
            "{}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    };
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// Runs the stress script in the guest booted on `kernel` (hard timeout
/// `timeout` seconds unless `--timeout` was given).
fn stress(
    tools: &Tools,
    root: &Path,
    vm_args: &VmArgs,
    kernel: &Built,
    modules: &Path,
    timeout: u64,
) -> Result<()> {
    let mut args = vm_args.clone();
    args.kernel = Some(kernel.bzimage.clone());
    let opts = vm::VmOptions::from_args(&args, timeout)?;
    // The KCSAN stage sorts KCSAN reports itself, from the console.
    let env = if kernel.variant == Variant::Kcsan {
        "STRESS_KCSAN_ON_HOST=1 "
    } else {
        ""
    };
    let command = format!(
        "{env}bash {} {}",
        util::shell_quote_path(&script(root, "stress.sh")),
        util::shell_quote_path(modules)
    );
    let outcome = vm::run(tools, root, &opts, &command)?;
    outcome.check(&command)?;
    if !outcome.tail.iter().any(|line| line.trim() == "STRESS PASS") {
        bail!("the stress run did not report STRESS PASS: see its output above");
    }
    Ok(())
}

/// The KCSAN reports in a console log, verbatim: each from its
/// "BUG: KCSAN" line to the closing line of `=`, once per "BUG: KCSAN: ..."
/// line (the first: a guest script's `dmesg` output repeats them later).
fn kcsan_reports(log: &Path) -> Result<Vec<String>> {
    let text = match std::fs::read(log) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("reading {}", log.display())),
    };
    let mut reports = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.contains(KCSAN_REPORT) {
            if let Some(report) = current.take() {
                reports.push(report.join("\n"));
            }
            current = Some(vec![line]);
        } else if let Some(report) = current.as_mut() {
            report.push(line);
            if line.trim_end().ends_with("==========") {
                reports.push(report.join("\n"));
                current = None;
            }
        }
    }
    if let Some(report) = current {
        reports.push(report.join("\n"));
    }
    let mut seen = std::collections::BTreeSet::new();
    reports.retain(|report| {
        let first = report.lines().next().unwrap_or_default();
        let key = first.find(KCSAN_REPORT).map_or(first, |at| &first[at..]);
        seen.insert(key.to_string())
    });
    Ok(reports)
}

/// The KCSAN stage: the stress run and the VM tests on the KCSAN kernel,
/// each with the kernel console written to a log under
/// `target/kernel-matrix/`; fails on any KCSAN report in relay code (a
/// function of kernel/relay.c, blktrace, klog or the relay samples in its
/// title or stacks), on any other kernel splat in either console (the VM
/// tests do not read the kernel log), or if the stress run or the VM tests
/// fail. Every
/// report is printed verbatim and kept in `<release>-kcsan-reports.txt`
/// there; those outside relay code (KCSAN_STRICT finds races in the VFS
/// while udev starts, before any relay code runs) are listed in the
/// stage's line without failing it.
fn kcsan_stage(
    tools: &Tools,
    root: &Path,
    vm_args: &VmArgs,
    built: &Built,
    exerciser_scale: u32,
    vm_tests: &VmTests,
) -> Result<String> {
    let modules = intree_modules(root, &built.build_dir)?;
    let logs = util::metadata(root)?.target_dir.join("kernel-matrix");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let stress_log = logs.join(format!("{}-stress.console", built.release));
    let tests_log = logs.join(format!("{}-vm-tests.console", built.release));
    let exerciser_log = logs.join(format!("{}-exerciser.console", built.release));
    for log in [&stress_log, &tests_log, &exerciser_log] {
        let _ = std::fs::remove_file(log);
    }

    let mut args = vm_args.clone();
    args.console_log = Some(stress_log.clone());
    let stress_result = stress(tools, root, &args, built, &modules, KCSAN_STRESS_TIMEOUT);
    let mut args = vm_args.clone();
    args.kernel = Some(built.bzimage.clone());
    args.console_log = Some(tests_log.clone());
    args.timeout = args.timeout.or(Some(KCSAN_VM_TEST_TIMEOUT));
    let tests_result = vm_tests(&args, &modules, &TestSelection::default());
    let (figures, exerciser_result) = long_exerciser(
        vm_args,
        built,
        &modules,
        exerciser_scale,
        &exerciser_log,
        vm_tests,
    );

    let mut reports = kcsan_reports(&stress_log)?;
    reports.extend(kcsan_reports(&tests_log)?);
    let exerciser_reports = kcsan_reports(&exerciser_log)?;
    reports.extend(exerciser_reports.iter().cloned());
    let relay = relay_functions(&built.build_dir)?;
    let (in_relay, outside): (Vec<String>, Vec<String>) = reports
        .into_iter()
        .partition(|report| in_relay_code(report, &relay));
    let file = logs.join(format!("{}-kcsan-reports.txt", built.release));
    let _ = std::fs::remove_file(&file);
    let mut outside_note = String::new();
    if !in_relay.is_empty() || !outside.is_empty() {
        let mut text = String::new();
        for (title, list) in [
            ("in relay code", &in_relay),
            ("outside relay code", &outside),
        ] {
            if list.is_empty() {
                continue;
            }
            println!(
                "\n==> {} KCSAN reports {title} on {}:",
                list.len(),
                built.release
            );
            text.push_str(&format!("### {} KCSAN reports {title}\n\n", list.len()));
            for report in list {
                println!("{report}\n");
                text.push_str(report);
                text.push_str("\n\n");
            }
        }
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
        outside_note = format!(
            ", {} KCSAN reports outside relay code ({}; in {})",
            outside.len(),
            outside
                .iter()
                .map(|r| title(r))
                .collect::<Vec<_>>()
                .join("; "),
            file.display()
        );
    }
    if !in_relay.is_empty() {
        bail!(
            "{} KCSAN reports in relay code (the first: {:?}){outside_note}; all of them in {}, \
             the consoles in {}",
            in_relay.len(),
            title(&in_relay[0]),
            file.display(),
            logs.display()
        );
    }
    // Other splats: the VM tests do not read the kernel log, the console has it.
    let mut splats = other_splats(&stress_log)?;
    splats.extend(other_splats(&tests_log)?);
    let exerciser_splats = other_splats(&exerciser_log)?;
    splats.extend(exerciser_splats.iter().cloned());
    let exerciser_in_relay = exerciser_reports
        .iter()
        .filter(|report| in_relay_code(report, &relay))
        .count();
    let verdict = match &exerciser_result {
        Err(err) => format!("**failed**: {err:#}"),
        Ok(()) if exerciser_in_relay > 0 => {
            format!("**failed**: {exerciser_in_relay} KCSAN reports in relay code")
        }
        Ok(()) if !exerciser_splats.is_empty() => {
            format!(
                "**failed**: kernel splats ({})",
                exerciser_splats.join("; ")
            )
        }
        Ok(()) if exerciser_reports.is_empty() => "passed: no KCSAN report".to_string(),
        Ok(()) => format!(
            "passed: no KCSAN report in relay code ({} outside it: {})",
            exerciser_reports.len(),
            exerciser_reports
                .iter()
                .map(|r| title(r))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    };
    write_exerciser_summary(&logs, built, "KCSAN", exerciser_scale, &figures, &verdict)?;
    if !splats.is_empty() {
        let failed = [
            stress_result
                .err()
                .map(|e| format!("the stress run: {e:#}")),
            tests_result.err().map(|e| format!("the VM tests: {e:#}")),
            exerciser_result
                .as_ref()
                .err()
                .map(|e| format!("the long exerciser run: {e:#}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>();
        bail!(
            "kernel splats in the console ({}){}; the consoles are in {}",
            splats.join("; "),
            if failed.is_empty() {
                String::new()
            } else {
                format!("; {}", failed.join("; "))
            },
            logs.display()
        );
    }
    stress_result.context("the stress run")?;
    let line = tests_result.context("the VM tests")?;
    exerciser_result.context("the long exerciser run")?;
    if outside.is_empty() {
        outside_note = ", no KCSAN report".to_string();
    }
    Ok(format!(
        "{} (stress ok, {}, exerciser x{exerciser_scale} ok, no KCSAN report in relay \
         code{outside_note})",
        built.release,
        line.unwrap_or_default()
    ))
}

/// The ABI exerciser alone, `scale` times longer than in the VM tests
/// (`RELAY_EXERCISER_SCALE`), on the debug kernel `built`, its console
/// kept in `console`. Returns its figures (the seed, then operations and
/// time per channel configuration, as it printed them), whether or not it
/// passed, and whether it passed.
fn long_exerciser(
    vm_args: &VmArgs,
    built: &Built,
    modules: &Path,
    scale: u32,
    console: &Path,
    vm_tests: &VmTests,
) -> (Vec<String>, Result<()>) {
    let _ = std::fs::remove_file(console);
    let mut args = vm_args.clone();
    args.kernel = Some(built.bzimage.clone());
    args.console_log = Some(console.to_path_buf());
    args.timeout = args.timeout.or(Some(EXERCISER_TIMEOUT));
    let selection = TestSelection {
        only: Some("exerciser"),
        // Its figures go to stderr, which libtest shows only with this.
        env: vec![
            ("RELAY_EXERCISER_SCALE", scale.to_string()),
            ("RUST_TEST_NOCAPTURE", "1".to_string()),
        ],
    };
    println!(
        "\n==> {}: the ABI exerciser, {scale} times longer",
        built.release
    );
    let result = vm_tests(&args, modules, &selection).map(|_| ());
    let text = std::fs::read(console)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    let mut figures: Vec<String> = Vec::new();
    for line in text.lines().map(|line| line.trim_end_matches('\r').trim()) {
        // The seed follows libtest's "test NAME ... " on the same line.
        let figure = match line.find("exerciser seed ") {
            Some(at) => Some(&line[at..]),
            None => (line.starts_with("configuration ") && line.contains(" reader operations"))
                .then_some(line),
        };
        if let Some(figure) = figure {
            if !figures.iter().any(|seen| seen == figure) {
                figures.push(figure.to_string());
            }
        }
    }
    (figures, result)
}

/// Writes `target/kernel-matrix/<release>-exerciser.md`, the long
/// exerciser run's figures and verdict as RELIABILITY.md shows them
/// (`cargo xtask reliability` takes every such file).
fn write_exerciser_summary(
    logs: &Path,
    built: &Built,
    checker: &str,
    scale: u32,
    figures: &[String],
    verdict: &str,
) -> Result<()> {
    let stage = match built.variant {
        Variant::Kcsan => "kcsan",
        _ => "kasan",
    };
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_default();
    let mut text = format!(
        "### {checker}: `{}`\n\n`cargo xtask kernel-matrix --only {stage} --exerciser-scale \
         {scale}` ({date}; `RELAY_EXERCISER_SCALE={scale}`, 3 reader threads per \
         configuration):\n\n",
        built.release
    );
    if figures.is_empty() {
        text.push_str("- (the exerciser printed no figures)\n");
    }
    for figure in figures {
        text.push_str(&format!("- {figure}\n"));
    }
    text.push_str(&format!("- result: {verdict}\n"));
    let file = logs.join(format!("{}-exerciser.md", built.release));
    std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))
}

/// The first lines of kernel splats other than KCSAN reports in a console
/// log (warnings, BUGs, oopses, refcount and list corruption), each once.
fn other_splats(log: &Path) -> Result<Vec<String>> {
    let text = match std::fs::read(log) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("reading {}", log.display())),
    };
    let mut splats: Vec<String> = Vec::new();
    for line in text.lines() {
        // Past a printk timestamp, if the console has them.
        let line = line.trim_end_matches('\r');
        let body = match line.strip_prefix('[') {
            Some(rest) => rest.split_once("] ").map_or(line, |(_, body)| body),
            None => line,
        };
        let splat = (body.starts_with("WARNING: ") && body.contains(" at "))
            || (body.starts_with("BUG: ") && !body.starts_with(KCSAN_REPORT))
            || body.starts_with("Oops: ")
            || body.starts_with("general protection fault")
            || body.starts_with("refcount_t: ")
            || body.starts_with("list_add corruption")
            || body.starts_with("list_del corruption")
            || body.starts_with("Kernel panic");
        if splat && !splats.iter().any(|s| s == body) {
            splats.push(body.to_string());
        }
    }
    Ok(splats)
}

/// The "data-race in A / B" of a KCSAN report.
fn title(report: &str) -> &str {
    let first = report.lines().next().unwrap_or_default();
    first
        .find(KCSAN_REPORT)
        .map_or(first, |at| &first[at + KCSAN_REPORT.len()..])
        .trim_start_matches(':')
        .trim()
}

/// The functions of the relay code in a build, from the text symbols of
/// its objects: kernel/relay.o, blktrace (an in-tree relay user), klog.ko
/// and the relay samples' modules.
fn relay_functions(build_dir: &Path) -> Result<BTreeSet<String>> {
    let mut objects: Vec<PathBuf> = [
        "kernel/relay.o",
        "kernel/trace/blktrace.o",
        "kernel/klog.ko",
    ]
    .iter()
    .map(|rel| build_dir.join(rel))
    .collect();
    let samples = build_dir.join("samples/relay");
    objects.extend(
        std::fs::read_dir(&samples)
            .with_context(|| format!("reading {}", samples.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "ko")),
    );
    objects.retain(|path| path.is_file());
    let symbols = util::output(Command::new("nm").arg("--defined-only").args(&objects))?;
    Ok(symbols
        .lines()
        .filter_map(
            |line| match line.split_whitespace().collect::<Vec<_>>()[..] {
                [_, "T" | "t", name] => Some(name.to_string()),
                _ => None,
            },
        )
        .collect())
}

/// Whether a KCSAN report is a data race in relay code: one of the two
/// racing accesses (the functions of its title, "data-race in A / B") is
/// made by a function of `relay`. A race between two functions of another
/// subsystem that relay merely called (debugfs removing a file relay_close()
/// asked it to remove, say) is that subsystem's, and is listed apart.
fn in_relay_code(report: &str, relay: &BTreeSet<String>) -> bool {
    title(report)
        .trim_start_matches("data-race in")
        .split('/')
        .map(|name| name.trim().split('+').next().unwrap_or_default())
        .any(|name| !name.is_empty() && relay.contains(name))
}

/// The matrix's stages after the plain build of every base (named by the
/// base): `--only` takes these names.
pub const MATRIX_STAGES: &[&str] = &["kasan", "kcsan", "arm64", "i386"];

/// Why the matrix builds a variant without booting it, if it does (shown
/// as "built, not booted: <reason>"); see kernel-patches/README.md.
fn boot_blocker(_variant: Variant) -> Option<&'static str> {
    None
}

/// Boots a foreign-architecture kernel with kernel-patches/scripts/
/// boot-guest.sh (virtme-ng under qemu TCG, with a root of the guest's
/// architecture: busybox, bash, the build's static relay_test and modules)
/// and runs vm-test.sh and a stress round in it.
fn boot_guest(root: &Path, vm_args: &VmArgs, built: &Built) -> Result<String> {
    let arch = built
        .variant
        .foreign_arch()
        .context("boot-guest.sh boots arm64 and i386 kernels only")?;
    let timeout = vm_args.timeout.unwrap_or(GUEST_TIMEOUT);
    let started = Instant::now();
    let mut cmd = Command::new("bash");
    cmd.arg(script(root, "boot-guest.sh"))
        .args(["--timeout", &timeout.to_string()])
        .args(["--cpus", &vm_args.cpus.to_string()])
        .args(["--memory", &vm_args.memory])
        .arg(arch)
        .arg(&built.build_dir);
    util::run(&mut cmd).with_context(|| {
        format!(
            "the {arch} guest failed: see its console above (kept in {})",
            built.build_dir.join("boot-guest.log").display()
        )
    })?;
    Ok(format!(
        "{} (booted with virtme-ng under qemu TCG: vm-test.sh and a stress round passed in \
         {:.0} s)",
        built.release,
        started.elapsed().as_secs_f64()
    ))
}

/// `cargo xtask kernel-matrix`: every base (6.12 and 7.3) built and put
/// through the VM tests, then `STRESS_BASE` (7.3) with KASAN and lockdep
/// through the stress run and the VM tests, with no kernel splat allowed,
/// with KCSAN through the same (no KCSAN report allowed), both also
/// through a run of the ABI exerciser `exerciser_scale` times longer than
/// in the VM tests (its figures in `target/kernel-matrix/*-exerciser.md`,
/// for RELIABILITY.md), and built for arm64 and i386, each booted under
/// qemu through vm-test.sh and a stress round.
pub fn matrix(
    tools: &Tools,
    root: &Path,
    vm_args: &VmArgs,
    only: &[String],
    exerciser_scale: u32,
    vm_tests: &VmTests,
) -> Result<()> {
    let started = Instant::now();
    let mut results: Vec<(String, Result<String>)> = Vec::new();
    // A row of its own: the stages build what the series hold either way.
    results.push((
        "series carry kernel-patches/src/".to_string(),
        check_series(root).map(|()| "ok".to_string()),
    ));
    let bases = bases(root)?;
    let stages: Vec<String> = bases
        .iter()
        .cloned()
        .chain(MATRIX_STAGES.iter().map(|stage| stage.to_string()))
        .collect();
    if let Some(unknown) = only.iter().find(|stage| !stages.contains(stage)) {
        bail!("--only {unknown}: the stages are {}", stages.join(", "));
    }
    let run = |stage: &str| only.is_empty() || only.iter().any(|s| s == stage);

    for base in bases.iter().filter(|base| run(base)) {
        let name = format!("{base}: build + VM tests");
        println!("\n==> kernel matrix: {name}");
        let result = build(root, base, false).and_then(|built| {
            let modules = intree_modules(root, &built.build_dir)?;
            let mut args = vm_args.clone();
            args.kernel = Some(built.bzimage.clone());
            vm_tests(&args, &modules, &TestSelection::default())
                .map(|line| format!("{} ({})", built.release, line.unwrap_or_default()))
        });
        results.push((name, result));
    }
    if run("kasan") {
        let name = format!("{STRESS_BASE} KASAN + lockdep: stress + VM tests");
        println!("\n==> kernel matrix: {name}");
        let result = build(root, STRESS_BASE, true).and_then(|built| {
            let modules = intree_modules(root, &built.build_dir)?;
            stress(tools, root, vm_args, &built, &modules, STRESS_TIMEOUT)?;
            let mut args = vm_args.clone();
            args.kernel = Some(built.bzimage.clone());
            let line = vm_tests(&args, &modules, &TestSelection::default())?;
            let logs = util::metadata(root)?.target_dir.join("kernel-matrix");
            std::fs::create_dir_all(&logs)
                .with_context(|| format!("creating {}", logs.display()))?;
            let console = logs.join(format!("{}-exerciser.console", built.release));
            let (figures, result) = long_exerciser(
                vm_args,
                &built,
                &modules,
                exerciser_scale,
                &console,
                vm_tests,
            );
            // The exerciser fails on any report in the kernel log (KASAN,
            // lockdep, warnings); the console is checked besides.
            let splats = other_splats(&console)?;
            let verdict = match (&result, splats.is_empty()) {
                (Err(err), _) => format!("**failed**: {err:#}"),
                (Ok(()), false) => format!("**failed**: kernel splats ({})", splats.join("; ")),
                (Ok(()), true) => "passed: no KASAN, lockdep or other kernel report".to_string(),
            };
            write_exerciser_summary(
                &logs,
                &built,
                "KASAN + lockdep",
                exerciser_scale,
                &figures,
                &verdict,
            )?;
            result.context("the long exerciser run")?;
            if !splats.is_empty() {
                bail!(
                    "kernel splats during the long exerciser run: {} (console: {})",
                    splats.join("; "),
                    console.display()
                );
            }
            Ok(format!(
                "{} (stress ok, {}, exerciser x{exerciser_scale} ok)",
                built.release,
                line.unwrap_or_default()
            ))
        });
        results.push((name, result));
    }
    if run("kcsan") {
        let name = format!("{STRESS_BASE} KCSAN: stress + VM tests");
        println!("\n==> kernel matrix: {name}");
        let result = build_variant(root, STRESS_BASE, Variant::Kcsan)
            .and_then(|built| kcsan_stage(tools, root, vm_args, &built, exerciser_scale, vm_tests));
        results.push((name, result));
    }
    for variant in [Variant::Arm64, Variant::I386] {
        let arch = variant.foreign_arch().unwrap_or_default();
        if !run(arch) {
            continue;
        }
        let name = format!("{STRESS_BASE} {arch}: build + boot (vm-test.sh, stress)");
        println!("\n==> kernel matrix: {name}");
        let result =
            build_variant(root, STRESS_BASE, variant).and_then(|built| {
                match boot_blocker(variant) {
                    Some(reason) => Ok(format!("{}: built, not booted: {reason}", built.release)),
                    None => boot_guest(root, vm_args, &built),
                }
            });
        results.push((name, result));
    }

    println!(
        "\n==> kernel matrix ({:.0} min)",
        started.elapsed().as_secs_f64() / 60.0
    );
    let mut failed = Vec::new();
    for (name, result) in &results {
        match result {
            Ok(detail) => println!("  ok      {name}: {detail}"),
            Err(err) => {
                println!("  FAILED  {name}: {err:#}");
                failed.push(name.as_str());
            }
        }
    }
    if !failed.is_empty() {
        bail!("kernel matrix failed: {}", failed.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kcsan_reports_are_cut_out_once_each() {
        let dir = std::env::temp_dir().join(format!("xtask-kcsan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("console");
        std::fs::write(
            &log,
            "boot\n\
             [   10.1] ==================================================================\n\
             [   10.1] BUG: KCSAN: data-race in relay_switch_subbuf / relay_file_read\n\
             [   10.1] \n\
             [   10.1] write to 0xffff8880 of 8 bytes by task 12 on cpu 1:\n\
             [   10.1]  relay_switch_subbuf+0x1a/0x200\n\
             [   10.1] ==================================================================\n\
             test output\n\
             [   11.0] BUG: KCSAN: data-race in relay_switch_subbuf / relay_file_read\n\
             [   12.0] BUG: KCSAN: data-race in a / b\n\
             [   12.0] value changed: 0x1 -> 0x2\n",
        )
        .unwrap();
        let reports = kcsan_reports(&log).unwrap();
        assert_eq!(reports.len(), 2);
        assert!(reports[0].starts_with("[   10.1] BUG: KCSAN: data-race in relay_switch_subbuf"));
        assert!(reports[0].ends_with("=========="));
        assert_eq!(reports[0].lines().count(), 5);
        assert!(reports[1].ends_with("value changed: 0x1 -> 0x2"));
        std::fs::write(
            &log,
            "WARNING: failed to set xattr\n\
             [ 1.0] refcount_t: addition on 0; use-after-free.\n\
             WARNING: ../src/lib/refcount.c:25 at refcount_warn_saturate+0x95/0xc0, CPU#0: x/339\n\
             BUG: KCSAN: data-race in a / b\n\
             BUG: kernel NULL pointer dereference, address: 0000000000000010\n\
             refcount_t: addition on 0; use-after-free.\n",
        )
        .unwrap();
        assert_eq!(
            other_splats(&log).unwrap(),
            [
                "refcount_t: addition on 0; use-after-free.",
                "WARNING: ../src/lib/refcount.c:25 at refcount_warn_saturate+0x95/0xc0, CPU#0: x/339",
                "BUG: kernel NULL pointer dereference, address: 0000000000000010",
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(kcsan_reports(Path::new("/nonexistent/console"))
            .unwrap()
            .is_empty());
        let relay: BTreeSet<String> = [
            "relay_switch_subbuf".to_string(),
            "relay_close_buf".to_string(),
        ]
        .into();
        assert!(in_relay_code(&reports[0], &relay));
        assert!(!in_relay_code(&reports[1], &relay));
        // A race inside debugfs that relay_close() led to is debugfs's.
        let debugfs = "BUG: KCSAN: data-race in __debugfs_file_get / d_invalidate\n\n\
                       write to 0xff11 of 8 bytes by task 1 on cpu 0:\n \
                       d_invalidate+0x4f/0x340\n debugfs_remove+0x45/0x70\n \
                       relay_close_buf+0x19d/0x230\n";
        assert!(!in_relay_code(debugfs, &relay));
        assert_eq!(
            title(&reports[0]),
            "data-race in relay_switch_subbuf / relay_file_read"
        );
    }
}
