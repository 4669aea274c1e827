//! `tusk check-data`: checks the embedded coordinator's directory and, with `--salvage`,
//! rebuilds it from every intact frame. The work is `tusk_core::embedded::{check, salvage}`;
//! this prints it for an operator.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use tusk_core::embedded::{self, DataCheck, FileReport};

/// Check (and salvage) an embedded coordinator's data directory; the server must be stopped.
#[derive(Debug, Args)]
pub struct CheckDataArgs {
    /// The embedded coordinator's directory: `<upload-dir>/.tusk` unless
    /// coordinator.embedded.dir says otherwise.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Rebuild the directory from every intact frame, keeping the damaged files aside
    /// (renamed `<name>.damaged-<time>`), and print what was dropped.
    #[arg(long)]
    pub salvage: bool,
}

/// Exits non-zero when the directory is damaged and `--salvage` was not given (a start
/// would be refused), or when it cannot be read.
pub fn run(args: &CheckDataArgs) -> Result<()> {
    if args.salvage {
        let salvaged = embedded::salvage(&args.dir)?;
        print_check(&salvaged.check, false);
        let Some(written) = salvaged.written else {
            println!("nothing to salvage: no damage a start would refuse; nothing was changed");
            return Ok(());
        };
        for (file, fault) in salvaged.check.faults() {
            println!(
                "dropped: {} bytes {}..{} ({} bytes): {}",
                file.path.display(),
                fault.offset,
                fault.offset + fault.len,
                fault.len,
                fault.kind
            );
        }
        for s in &salvaged.check.skipped {
            println!(
                "dropped: upload {}: the entry at byte {} of {}: {}",
                s.upload_id,
                s.offset,
                s.file.display(),
                s.why
            );
        }
        for (from, to) in &written.kept_aside {
            println!("kept aside: {} -> {}", from.display(), to.display());
        }
        println!(
            "wrote: {} ({} records, token ceiling {}) and the empty log {}; tusk can start",
            written.snapshot.display(),
            salvaged.check.records,
            written.token_ceiling,
            written.log.display()
        );
        return Ok(());
    }
    let check = embedded::check(&args.dir)?;
    print_check(&check, true);
    if let Some((file, fault)) = check.damage() {
        bail!(
            "{} is damaged at byte {}: tusk refuses to start with it. `tusk check-data --dir \
             {} --salvage` keeps every intact frame and sets the damaged file aside",
            file.path.display(),
            fault.offset,
            args.dir.display()
        );
    }
    match check.torn_tail() {
        Some(torn) => println!(
            "ok: tusk starts with this directory, cutting the torn tail at byte {} (a write a \
             crash cut short, never acknowledged)",
            torn.offset
        ),
        None => println!("ok: tusk starts with this directory"),
    }
    Ok(())
}

/// Prints what a check found; with `skipped`, the entries replay skips too.
fn print_check(check: &DataCheck, skipped: bool) {
    println!("coordinator directory {}", check.dir.display());
    for file in check.snapshot.iter().chain(check.log.iter()) {
        print_file(file, check);
    }
    if check.snapshot.is_none() && check.log.is_none() {
        println!("  no snapshot and no log: an empty coordinator");
    }
    println!(
        "  {} upload records from every intact frame (log generation {})",
        check.records, check.generation
    );
    for s in check.skipped.iter().filter(|_| skipped) {
        println!(
            "  skipped at replay: upload {} (byte {} of {}): {}",
            s.upload_id,
            s.offset,
            s.file.display(),
            s.why
        );
    }
}

fn print_file(file: &FileReport, check: &DataCheck) {
    println!(
        "  {}: {} bytes, {} intact frames",
        file.path.display(),
        file.bytes,
        file.frames
    );
    let torn = check
        .torn_tail()
        .filter(|_| check.log.as_ref().is_some_and(|l| l.path == file.path))
        .map(|t| t.offset);
    for fault in &file.faults {
        let verdict = if Some(fault.offset) == torn {
            "torn tail: cut at the next start"
        } else {
            "damage: a start refuses it"
        };
        println!(
            "    byte {} ({} bytes, {} intact frames after it): {} [{verdict}]",
            fault.offset,
            fault.len,
            file.frames - fault.frames_before,
            fault.kind
        );
    }
}
