//! `cargo xtask kernel-matrix`: both series (6.12 and 7.3) built and put
//! through the VM tests, then the 7.3 kernel with KASAN and lockdep and with
//! KCSAN through a stress run, the VM tests and a long run of the ABI
//! exerciser, and built for arm64 and i386, each booted under qemu through
//! the smoke test and a stress round. The kernels come from
//! [`crate::kernel`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::kernel::{bases, build, build_variant, check_series, script, Built, Variant, CI_BASE};
use crate::modules::intree_modules;
use crate::setup::Tools;
use crate::vm::{TestSelection, VmArgs};
use crate::{test, util, vm};

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
const EXERCISER_SCALE: u32 = 40;

/// The VM tests (`xtask::test`, which builds the test binaries): the
/// kernel in the `VmArgs`, the modules' directory, which binaries.
type VmTests<'a> = dyn Fn(&VmArgs, &Path, &TestSelection) -> Result<Option<String>> + 'a;

/// What a KCSAN report starts with in the kernel log.
const KCSAN_REPORT: &str = "BUG: KCSAN";

/// What `cargo xtask kernel-matrix` takes.
#[derive(clap::Args)]
pub struct MatrixArgs {
    #[command(flatten)]
    vm: VmArgs,
    /// Run only this stage (repeatable): a base (6.12, 7.3: its build and
    /// VM tests), kasan, kcsan, arm64 or i386 (default: every stage).
    #[arg(long, value_name = "STAGE")]
    only: Vec<String>,
    /// How many times longer than in the VM tests the kasan and kcsan
    /// stages run the ABI exerciser (`RELAY_EXERCISER_SCALE`).
    #[arg(long, default_value_t = EXERCISER_SCALE)]
    exerciser_scale: u32,
}

/// `cargo xtask kernel-matrix`, its VM tests run by [`test::vm_tests_for`].
pub fn run(tools: &Tools, root: &Path, args: &MatrixArgs) -> Result<()> {
    matrix(
        tools,
        root,
        &args.vm,
        &args.only,
        args.exerciser_scale,
        &|vm_args, modules, selection| test::vm_tests_for(tools, root, vm_args, modules, selection),
    )
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
const MATRIX_STAGES: &[&str] = &["kasan", "kcsan", "arm64", "i386"];

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
fn matrix(
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
