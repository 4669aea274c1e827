//! The tus 1.0.0 conformance suite, generic over the backend pair.
//!
//! Every case is a plain `async fn(Ctx) -> anyhow::Result<()>` in [`cases`] that talks only
//! HTTP to the node's upload endpoint (never to its disk), so the same cases run unchanged
//! against every backend pair and against a cluster behind a load balancer.
//! [`conformance_suite!`](crate::conformance_suite) expands to one `#[tokio::test]` per case;
//! the case list in that macro is also where a case declares the extra server arguments it
//! needs (e.g. `--max-size 1000`).
//!
//! The behaviour under test is docs/http-contract.md plus the MUSTs of
//! <https://tus.io/protocols/resumable-upload>; every assertion names the rule it checks.

mod concat;
mod core;
mod cors;
mod creation;
mod extensions;
mod get;
mod robust;
pub mod util;

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::harness::Deployment;
pub use util::Ctx;

/// All conformance cases, by the name the generated test carries.
pub mod cases {
    pub use super::concat::*;
    pub use super::core::*;
    pub use super::cors::*;
    pub use super::creation::*;
    pub use super::extensions::*;
    pub use super::get::*;
    pub use super::robust::*;
}

/// Longest a single case may take before it counts as hung.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(120);

/// Cases that check how a node itself reads proxy headers (`--behind-proxy`). A load
/// balancer in front overwrites exactly those headers, so a deployment behind one runs these
/// cases against one of its nodes directly ([`Running::node_endpoint`]).
///
/// [`Running::node_endpoint`]: crate::harness::Running::node_endpoint
pub const NODE_CASES: &[&str] = &["location_behind_proxy"];

/// Starts `deployment` with `args` (a single node of a backend pair, or a cluster behind a
/// load balancer), runs `case` against its endpoint, stops everything.
///
/// Set `TUSK_TEST_KEEP=1` to keep the scratch directories when the case fails.
pub async fn run<F, Fut>(
    deployment: &dyn Deployment,
    args: &[&str],
    name: &str,
    case: F,
) -> Result<()>
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let mut running = deployment
        .start(args)
        .await
        .with_context(|| format!("starting tusk ({}) with {args:?}", deployment.name()))?;
    let endpoint = if NODE_CASES.contains(&name) {
        running.node_endpoint()
    } else {
        running.endpoint()
    };
    let ctx = Ctx::for_endpoint(endpoint)?.with_reads_unfinished(deployment.reads_unfinished());
    let outcome = match tokio::time::timeout(CASE_TIMEOUT, case(ctx)).await {
        Ok(result) => result,
        Err(_) => Err(anyhow::anyhow!(
            "case did not finish within {CASE_TIMEOUT:?}"
        )),
    };
    if outcome.is_err() && std::env::var_os("TUSK_TEST_KEEP").is_some() {
        for dir in running.keep_dirs() {
            eprintln!("kept {}", dir.display());
        }
    }
    drop(running);
    outcome.with_context(|| {
        format!(
            "conformance case `{name}` failed on {} (server args {args:?})",
            deployment.name()
        )
    })
}

/// Runs the named cases one after another against `ctx`, each failure naming its case:
/// `run_cases!(ctx, creation_basic, get_range)`.
#[macro_export]
macro_rules! run_cases {
    ($ctx:expr, $($case:ident),+ $(,)?) => {{
        use ::anyhow::Context as _;
        $(
            $crate::conformance::cases::$case($ctx.clone())
                .await
                .context(stringify!($case))?;
        )+
    }};
}

/// Expands to one `#[tokio::test]` per conformance case, each against its own fresh
/// deployment: a [`Pair`](crate::deploy::Pair) of halves (one node), e.g.
/// `tusk_tests::conformance_suite!(tusk_tests::deploy::S3_EMBEDDED);`, or any other
/// [`Deployment`], e.g. a cluster behind a load balancer
/// (`tusk_tests::conformance_suite!(tusk_tests::cluster::FS_REDIS_NGINX);`).
///
/// Each entry is `case_name [extra server args]`; the function of that name lives in
/// [`conformance::cases`](crate::conformance::cases).
#[macro_export]
macro_rules! conformance_suite {
    ($backend:expr) => {
        $crate::conformance_suite!(@cases $backend;
            // core protocol
            tus_resumable_required [],
            options_advertises_capabilities [],
            head_reports_upload_state [],
            head_unknown_is_404 [],
            patch_rejects_bad_requests [],
            patch_rejects_malformed_offsets [],
            patch_beyond_length_is_413 [],
            patch_chunks_roundtrip [],
            zero_length_upload [],
            method_override [],
            // creation, creation-with-upload, creation-defer-length
            creation_basic [],
            creation_rejects_bad_length [],
            creation_rejects_bad_metadata [],
            huge_header_is_4xx [],
            max_size_enforced ["--max-size", "1000"],
            creation_with_upload [],
            defer_length [],
            location_ignores_forwarded_without_flag [],
            location_behind_proxy ["--behind-proxy"],
            // termination, expiration, checksum
            termination [],
            termination_tombstone_expires ["--tombstone-ttl", "1s", "--sweep-interval", "1s"],
            expiration_headers [],
            expiration_sweeps_unfinished ["--expire-after", "2s", "--sweep-interval", "1s"],
            expiration_refreshed_by_patch ["--expire-after", "3s", "--sweep-interval", "1s"],
            expiration_disabled ["--expire-after", "0"],
            checksum_sha1 [],
            checksum_sha256 [],
            checksum_md5 [],
            checksum_crc32 [],
            checksum_sha512 [],
            checksum_rejects_unknown_and_malformed [],
            // concatenation, concatenation-unfinished
            concatenation_final [],
            concatenation_errors [],
            concatenation_unfinished [],
            concatenation_unfinished_deferred [],
            // GET, CORS
            get_range [],
            get_content_type_rules [],
            cors_preflight_and_exposed_headers [],
            cors_custom_origin ["--cors-allow-origin", "https://app.example"],
            cors_disabled ["--disable-cors"],
            cors_origin_list ["--cors-allow-origin", "https://a.example,https://*.b.example"],
            cors_credentials_and_max_age [
                "--cors-allow-origin", "https://app.example",
                "--cors-allow-credentials", "--cors-max-age", "10m",
                "--cors-allow-headers", "X-App-Token"
            ],
            // robustness
            hostile_ids_are_4xx [],
            concurrent_patches_are_consistent [],
            disconnect_commits_received_bytes [],
            get_does_not_wait_for_writer [],
        );
    };
    (@cases $backend:expr; $($name:ident [$($arg:literal),*]),* $(,)?) => {
        $(
            #[::tokio::test]
            async fn $name() -> ::anyhow::Result<()> {
                $crate::conformance::run(
                    &$backend,
                    &[$($arg),*],
                    stringify!($name),
                    $crate::conformance::cases::$name,
                )
                .await
            }
        )*
    };
}
