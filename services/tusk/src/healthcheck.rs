//! `tusk healthcheck`: the container's HEALTHCHECK and a Kubernetes exec probe, in an image
//! without curl. Exit status 0 when the node answers 200.

use anyhow::{bail, Result};
use clap::Args;

use crate::admin_client::AdminTarget;

/// Ask a running node whether it is alive (/healthz) or ready for traffic (/readyz).
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// Ask /readyz (storage and coordinator answer, not draining) instead of /healthz.
    #[arg(long)]
    pub ready: bool,
    #[command(flatten)]
    pub target: AdminTarget,
}

pub fn run(args: &HealthcheckArgs) -> Result<()> {
    let path = if args.ready { "/readyz" } else { "/healthz" };
    let answer = args.target.get(path)?;
    if answer.status != 200 {
        bail!("{path} answered {}: {}", answer.status, answer.body.trim());
    }
    print!("{}", answer.body);
    Ok(())
}
