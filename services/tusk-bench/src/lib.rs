//! `tusk bench`: a load generator for any tus 1.0.0 server.
//!
//! Scenarios (each prints exactly one JSON line on stdout; progress goes to stderr):
//! - `big`: one large upload in big PATCHes, then GET + sha256 check;
//! - `small`: many tiny uploads (POST + PATCH) over N keep-alive connections;
//! - `parallel`: several medium uploads at once;
//! - `resume`: a PATCH cut mid-body on a raw TCP connection, then HEAD and resume;
//! - `s3-direct` (not in `all`): no tus server; `--big-size` bytes sent straight to the S3
//!   server at the URL as a multipart upload, the yardstick for `big` through Tusk on S3.
//!
//! Payload bytes come from a seekable counter-based PRNG (see [`payload`]), generated into
//! reused buffers while streaming; generation is part of the timed figures (it costs a few
//! percent at most). Expected sha256s are computed outside the timed parts.

pub mod client;
pub mod payload;
mod s3direct;
mod scenarios;
pub mod util;

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::util::{parse_size, Target};

/// Which scenario(s) to run.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    Big,
    Small,
    Parallel,
    Resume,
    S3Direct,
    All,
}

/// Arguments of `tusk bench` (sizes take 4096, 4KiB, 64MiB, 1GiB, ...).
#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// tus creation endpoint, e.g. http://127.0.0.1:8080/files/
    pub url: String,

    /// Scenario to run.
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    pub scenario: Scenario,

    /// big: size of the upload.
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    pub big_size: u64,
    /// big: bytes per PATCH.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub big_chunk: u64,

    /// small: number of uploads.
    #[arg(long, default_value_t = 2000)]
    pub small_count: usize,
    /// small: size of each upload (sent in one PATCH).
    #[arg(long, default_value = "4KiB", value_parser = parse_size)]
    pub small_size: u64,
    /// small: concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,

    /// parallel: number of simultaneous uploads (one connection each).
    #[arg(long, default_value_t = 16)]
    pub parallel_uploads: usize,
    /// parallel: size of each upload.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub parallel_size: u64,
    /// parallel: bytes per PATCH.
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    pub parallel_chunk: u64,

    /// resume: size of the upload (announced as one PATCH's Content-Length).
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    pub resume_size: u64,
    /// resume: bytes sent before the connection is cut.
    #[arg(long, default_value = "100MiB", value_parser = parse_size)]
    pub resume_cut: u64,
    /// resume: cut with a TCP reset (SO_LINGER 0) instead of a normal close (FIN).
    #[arg(long)]
    pub resume_rst: bool,
    /// resume: after the cut, poll HEAD until the offset reaches the cut or has not moved for
    /// this many seconds.
    #[arg(long, default_value_t = 3.0)]
    pub resume_settle: f64,

    /// s3-direct: the bucket (created if missing).
    #[arg(long, default_value = "tusk-bench")]
    pub s3_bucket: String,
    /// s3-direct: part size.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    pub s3_part_size: u64,
    /// s3-direct: parts being sent at once (each held in memory).
    #[arg(long, default_value_t = 4)]
    pub s3_parts_in_flight: usize,

    /// Skip the GET + sha256 checks of big, parallel and resume.
    #[arg(long)]
    pub no_verify: bool,
    /// Seed of the payload generator.
    #[arg(long, default_value_t = 0x7475_736b)]
    pub seed: u64,
    /// Per-request timeout in seconds (whole request and response).
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

impl BenchArgs {
    fn validate(&self) -> Result<()> {
        if self.big_chunk == 0 || self.parallel_chunk == 0 {
            bail!("--big-chunk and --parallel-chunk must be > 0");
        }
        if self.concurrency == 0 || self.parallel_uploads == 0 {
            bail!("--concurrency and --parallel-uploads must be > 0");
        }
        if self.resume_cut == 0 || self.resume_cut >= self.resume_size {
            bail!("--resume-cut must be > 0 and < --resume-size");
        }
        if self.timeout == 0 {
            bail!("--timeout must be > 0");
        }
        if !(self.resume_settle >= 0.0 && self.resume_settle.is_finite()) {
            bail!("--resume-settle must be a non-negative number of seconds");
        }
        Ok(())
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.timeout)
    }
}

/// Runs the selected scenario(s), printing one JSON line per scenario on stdout.
/// Fails on the first unexpected status, wrong offset or byte mismatch.
pub async fn run(args: BenchArgs) -> Result<()> {
    args.validate()?;
    if args.scenario == Scenario::S3Direct {
        let json = s3direct::direct_multipart(&args).await?;
        println!("{json}");
        return Ok(());
    }
    let endpoint = Target::parse(&args.url)?;
    let list: &[Scenario] = match args.scenario {
        Scenario::All => &[
            Scenario::Big,
            Scenario::Small,
            Scenario::Parallel,
            Scenario::Resume,
        ],
        Scenario::Big => &[Scenario::Big],
        Scenario::Small => &[Scenario::Small],
        Scenario::Parallel => &[Scenario::Parallel],
        Scenario::Resume => &[Scenario::Resume],
        Scenario::S3Direct => unreachable!("handled above"),
    };
    for scenario in list {
        let outcome = match scenario {
            Scenario::Big => scenarios::big(&args, &endpoint).await?,
            Scenario::Small => scenarios::small(&args, &endpoint).await?,
            Scenario::Parallel => scenarios::parallel(&args, &endpoint).await?,
            Scenario::Resume => scenarios::resume(&args, &endpoint).await?,
            Scenario::All | Scenario::S3Direct => unreachable!("expanded above"),
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", outcome.json)?;
        out.flush()?;
        if let Some(failure) = outcome.failure {
            bail!("{failure}");
        }
    }
    Ok(())
}
