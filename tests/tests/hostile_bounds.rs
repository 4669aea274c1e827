//! Hostile clients get a bounded cost per request: a final upload names each partial once and
//! a bounded number of them, client-supplied lengths never wrap when summed, and queued hook
//! notifications hold bounded memory however large the requests' headers are.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use futures_util::StreamExt;
use reqwest::Method;
use tusk_tests::conformance::util::{expect_error, header, random_bytes, Ctx};
use tusk_tests::deploy::{Embedded, Pair, SingleNode};
use tusk_tests::faults;
use tusk_tests::harness::{FsEmbedded, TestServer};
use tusk_tests::rawpatch::RawPatch;
use tusk_tests::s3::S3Storage;

/// A partial upload of `len` bytes with all of them sent.
async fn finished_partial(t: &Ctx, len: usize) -> Result<String> {
    let url = t
        .create_with(&[
            ("Upload-Length", &len.to_string()),
            ("Upload-Concat", "partial"),
        ])
        .await?;
    t.patch_ok(&url, 0, vec![7u8; len]).await?;
    Ok(url)
}

async fn create_final(t: &Ctx, partials: &[String]) -> Result<reqwest::Response> {
    let concat = format!("final;{}", partials.join(" "));
    t.send(
        t.tus(Method::POST, &t.endpoint)
            .header("Upload-Concat", concat),
        "creation of a final upload",
    )
    .await
}

/// One partial named a thousand times was linked (or, past the filesystem's link limit,
/// copied) a thousand times for the price of one upload; and a final over very many
/// partials costs a coordinator load per partial on every request.
#[tokio::test]
async fn a_final_upload_names_each_partial_once_and_at_most_the_limit() -> Result<()> {
    let server = TestServer::start(&FsEmbedded, &[]).await?;
    let t = Ctx::new(&server)?;
    let partial = finished_partial(&t, 100).await?;
    let other = finished_partial(&t, 10).await?;

    let twice = [partial.clone(), other.clone(), partial.clone()];
    expect_error(
        create_final(&t, &twice).await?,
        400,
        "a final upload may not name the same partial twice",
    )
    .await?;
    // The same partial by path and by URL is still the same partial.
    let path = t.path_of(&partial)?;
    expect_error(
        create_final(&t, &[partial.clone(), path]).await?,
        400,
        "a final upload may not name the same partial twice, by path or URL",
    )
    .await?;

    // Default uploads.max_parts_per_final: 100.
    let mut many = Vec::new();
    for _ in 0..101 {
        many.push(
            t.create_with(&[("Upload-Length", "1"), ("Upload-Concat", "partial")])
                .await?,
        );
    }
    expect_error(
        create_final(&t, &many).await?,
        400,
        "a final upload may name at most uploads.max_parts_per_final partials",
    )
    .await?;
    many.pop();
    let allowed = create_final(&t, &many).await?;
    ensure!(
        allowed.status() == 201,
        "a final upload of 100 partials was refused: {}",
        allowed.status()
    );

    let fine = create_final(&t, &[partial, other]).await?;
    ensure!(
        fine.status() == 201,
        "a final upload of two distinct partials: {}",
        fine.status()
    );
    Ok(())
}

/// Partial lengths are client-supplied: two partials of 2^63 bytes must not make a final
/// upload of length 0, neither at creation nor once deferred lengths are declared.
#[tokio::test]
async fn partial_lengths_that_overflow_u64_never_wrap() -> Result<()> {
    let server = TestServer::start(&FsEmbedded, &[]).await?;
    let t = Ctx::new(&server)?;
    let half = (1u64 << 63).to_string();
    let mut halves = Vec::new();
    for _ in 0..2 {
        halves.push(
            t.create_with(&[
                ("Upload-Length", half.as_str()),
                ("Upload-Concat", "partial"),
            ])
            .await?,
        );
    }
    expect_error(
        create_final(&t, &halves).await?,
        413,
        "a final upload whose partials' lengths add up past 2^64 is too large",
    )
    .await?;

    // Deferred partials learn their lengths after the final upload was created.
    let mut deferred = Vec::new();
    for _ in 0..2 {
        deferred.push(
            t.create_with(&[("Upload-Defer-Length", "1"), ("Upload-Concat", "partial")])
                .await?,
        );
    }
    let created = create_final(&t, &deferred).await?;
    ensure!(
        created.status() == 201,
        "final over deferred partials: {}",
        created.status()
    );
    let final_url = header(&created, "location").context("no Location")?;
    let final_url = reqwest::Url::parse(&t.endpoint)?
        .join(&final_url)?
        .to_string();
    for url in &deferred {
        let declared = t
            .send(
                t.patch_req(url, 0, Vec::new())
                    .header("Upload-Length", half.as_str()),
                "PATCH declaring the length",
            )
            .await?;
        ensure!(
            declared.status() == 204,
            "declaring 2^63: {}",
            declared.status()
        );
    }
    let head = t.head(&final_url).await?;
    ensure!(
        head.status() == 200,
        "HEAD of the final upload answered {}",
        head.status()
    );
    ensure!(
        header(&head, "upload-length").is_none(),
        "the final upload's length wrapped: Upload-Length {:?}",
        header(&head, "upload-length")
    );
    Ok(())
}

/// A memory figure of a process from /proc (`VmRSS`: resident now; `VmHWM`: its peak).
fn status_bytes(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .with_context(|| format!("no {field}"))?
        .parse::<u64>()?;
    Ok(kib * 1024)
}

/// Sum of the samples of counter `name` whose labels include `label` (e.g.
/// `outcome="dropped"`), from the node's admin /metrics.
async fn counter_sum(admin: &str, name: &str, label: &str) -> Result<f64> {
    let text = reqwest::get(format!("{}/metrics", admin.trim_end_matches('/')))
        .await?
        .text()
        .await?;
    let series = format!("{name}{{");
    Ok(text
        .lines()
        .filter(|l| l.starts_with(&series) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// The hook queue's byte budget in the test: small, so that 3,000 notifications overflow it
/// many times over.
const QUEUE_BYTES: u64 = 16 << 20;

/// Hook notifications carry the request headers the operator forwards: 3,000 creations with
/// a forwarded 60 KB header while the hook receiver is down used to queue ~180 MiB. The queue
/// holds at most `hooks.queue_bytes` (16 MiB by default) and drops the oldest beyond it,
/// counted.
#[tokio::test]
async fn queued_hook_notifications_hold_bounded_memory() -> Result<()> {
    // A port nobody listens on: every delivery fails and is retried, so the queue fills.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?;
    let endpoint = format!("http://{}/hooks", closed.local_addr()?);
    drop(closed);
    let scratch = tempfile::tempdir()?;
    let config = scratch.path().join("forward.toml");
    std::fs::write(
        &config,
        format!("[hooks]\nforward_headers = [\"x-padding\"]\nqueue_bytes = {QUEUE_BYTES}\n"),
    )?;
    let config = config.display().to_string();
    let server = TestServer::start(
        &FsEmbedded,
        &[
            "--hooks-http",
            &endpoint,
            "--hooks-enabled-events",
            "post-create",
            "--config",
            &config,
        ],
    )
    .await?;
    let pid = server.pid().context("no pid")?;
    let admin = server.admin.clone().context("no admin listener")?;
    let t = Ctx::new(&server)?;
    let padding = "p".repeat(60_000);
    t.create(1).await?;
    let before = status_bytes(pid, "VmRSS")?;
    let results = futures_util::stream::iter(0..3000)
        .map(|_| {
            let t = t.clone();
            let padding = padding.clone();
            async move {
                t.create_with(&[("Upload-Length", "1"), ("X-Padding", &padding)])
                    .await
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    for result in results {
        result?;
    }
    let grown = status_bytes(pid, "VmRSS")?.saturating_sub(before);
    let dropped = counter_sum(&admin, "tusk_hook_calls_total", "outcome=\"dropped\"").await?;
    ensure!(
        dropped > 0.0,
        "no notification was dropped although ~180 MB of them were queued (grew {} MiB)",
        grown >> 20
    );
    // The queue's budget plus the request buffers and the allocator's slack: bounded, not
    // growing with the number of notifications (before: ~200 MiB for these 3,000).
    ensure!(
        grown < QUEUE_BYTES + (64 << 20),
        "the server grew by {} MiB queueing notifications with a {} MiB queue budget",
        grown >> 20,
        QUEUE_BYTES >> 20
    );
    Ok(())
}

const MIB: usize = 1024 * 1024;

/// One S3 (moto) node with 5 MiB parts and the given spool budget and wait; the directory
/// holds its config file and, in `spool/`, its spool files.
async fn s3_node_with_budget(
    budget: usize,
    wait: &str,
    commit_interval: &str,
) -> Result<(SingleNode, tempfile::TempDir)> {
    let scratch = tempfile::tempdir()?;
    let spool = scratch.path().join("spool");
    std::fs::create_dir(&spool)?;
    let config = scratch.path().join("budget.toml");
    std::fs::write(
        &config,
        format!(
            "[storage.s3]\nbuffer_budget = {budget}\nbuffer_wait = \"{wait}\"\n\
             spool_dir = {spool:?}\n\
             [uploads]\ncommit_interval = \"{commit_interval}\"\n"
        ),
    )?;
    let pair = Pair {
        storage: S3Storage {
            part_size: Some(5 * MIB as u64),
            ..S3Storage::DEFAULT
        },
        coordinator: Embedded,
    };
    let config = config.display().to_string();
    let single = SingleNode::start(&pair, &["--config", &config]).await?;
    Ok((single, scratch))
}

/// S3 spool files share one budget per node: a PATCH that finds it spent waits without
/// reading its body, then gets 503 with Retry-After and holds nothing; the PATCH holding
/// the budget is unharmed, and the refused one succeeds when retried. Before the budget,
/// every stalled PATCH held up to a whole part (16 MiB by default) on top of the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_part_buffers_share_a_budget_past_which_a_patch_gets_503() -> Result<()> {
    // Budget 6 MiB, parts 5 MiB: the first PATCH, 4.5 MiB into its first part, holds
    // 4.5 MiB, which leaves the second 1.5 MiB. No progress commit is ever due, so the first
    // PATCH's pause does not let go of its spool (see the next test).
    let (single, _config) = s3_node_with_budget(6 * MIB, "1s", "1h").await?;
    let t = Ctx::for_endpoint(&single.node.endpoint)?;
    let first_data = random_bytes(10 * MIB);
    let second_data = random_bytes(10 * MIB);
    let first = t.create(first_data.len() as u64).await?;
    let second = t.create(second_data.len() as u64).await?;

    let held = 4 * MIB + MIB / 2;
    let mut holding = RawPatch::open(&first, 0, first_data.len()).await?;
    holding
        .send(&first_data[..held], 256 * 1024, Duration::ZERO)
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A little past what the budget has left: the rest waits in the socket buffers.
    let mut refused = RawPatch::open(&second, 0, second_data.len()).await?;
    refused
        .send(
            &second_data[..MIB + MIB / 2 + 64 * 1024],
            64 * 1024,
            Duration::ZERO,
        )
        .await?;
    let (status, head) = refused
        .response(Duration::from_secs(5))
        .await?
        .context("the second PATCH's connection closed without an answer")?;
    let head = head.to_ascii_lowercase();
    ensure!(
        status == 503 && head.contains("retry-after: 1"),
        "the PATCH past the buffer budget was answered {head:?}"
    );
    ensure!(
        counter_sum(
            single.node.admin.as_deref().context("no admin listener")?,
            "tusk_request_errors_total",
            "kind=\"busy\"",
        )
        .await?
            >= 1.0,
        "the refusal is not counted as tusk_request_errors_total{{kind=\"busy\"}}"
    );

    holding
        .send(&first_data[held..], 256 * 1024, Duration::ZERO)
        .await?;
    let (status, head) = holding
        .response(Duration::from_secs(20))
        .await?
        .context("the holding PATCH got no answer")?;
    ensure!(
        status == 204,
        "the PATCH holding the budget was answered {head:?}"
    );
    faults::check_exact(&t, &first, &first_data).await?;

    let from = t.offset(&second).await? as usize;
    t.patch_ok(&second, from as u64, second_data[from..].to_vec())
        .await
        .context("retrying the refused PATCH")?;
    faults::check_exact(&t, &second, &second_data).await
}

/// A client that stalls mid-part holds no buffer while it waits: once a progress commit is
/// due and the client has paused for a second, what it sent goes to a tail object and is
/// committed (HEAD shows it), its spool goes back to the budget, and another upload that
/// needs the whole budget is served. The stalled client then finishes, sha256-exact.
/// Before, the stalled PATCH held its 5 MiB buffer until the network timeout: HEAD said 0
/// and the other upload got 503 once `buffer_wait` ran out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_s3_patch_commits_and_lets_go_of_its_buffer() -> Result<()> {
    let (single, _config) = s3_node_with_budget(6 * MIB, "3s", "500ms").await?;
    let t = Ctx::for_endpoint(&single.node.endpoint)?;
    let stalled_data = random_bytes(10 * MIB);
    let stalled = t.create(stalled_data.len() as u64).await?;
    let held = 4 * MIB + MIB / 2;
    let mut stalling = RawPatch::open(&stalled, 0, stalled_data.len()).await?;
    stalling
        .send(&stalled_data[..held], 256 * 1024, Duration::ZERO)
        .await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let seen = t.offset(&stalled).await? as usize;
    ensure!(
        seen == held,
        "HEAD of the upload whose PATCH stalls after {held} bytes answered {seen}: its bytes \
         were not committed while it stalled"
    );

    let other = random_bytes(10 * MIB);
    let started = std::time::Instant::now();
    let url = t
        .upload(&other)
        .await
        .context("an upload needing the whole buffer budget while another PATCH stalls")?;
    eprintln!("the other upload took {:?}", started.elapsed());
    faults::check_exact(&t, &url, &other).await?;

    stalling
        .send(&stalled_data[held..], 256 * 1024, Duration::ZERO)
        .await?;
    let (status, head) = stalling
        .response(Duration::from_secs(20))
        .await?
        .context("the stalled PATCH got no answer once resumed")?;
    ensure!(status == 204, "the resumed PATCH was answered {head:?}");
    faults::check_exact(&t, &stalled, &stalled_data).await
}

/// Bytes in the spool files `pid` has open under `dir` (unnamed files show in /proc as
/// their directory and a `(deleted)` or `#inode` name; their size is what was written).
fn spooled_bytes(pid: u32, dir: &std::path::Path) -> Result<u64> {
    let mut bytes = 0;
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let fd = fd?.path();
        let Ok(target) = std::fs::read_link(&fd) else {
            continue;
        };
        if target.starts_with(dir) {
            bytes += std::fs::metadata(&fd).map_or(0, |m| m.len());
        }
    }
    Ok(bytes)
}

/// A stalled S3 PATCH holds the part it has received in a spool file on disk, not in
/// memory, and the file is gone once the part is sent. Before, the part was a buffer in
/// memory (50 such PATCHes at the defaults: 292 MiB peak RSS in attack-memory.py).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_s3_patch_holds_its_part_on_disk_not_in_memory() -> Result<()> {
    let (single, scratch) = s3_node_with_budget(64 * MIB, "3s", "1h").await?;
    let spool = scratch.path().join("spool").canonicalize()?;
    let pid = single.node.pid().context("no pid")?;
    let t = Ctx::for_endpoint(&single.node.endpoint)?;
    let data = random_bytes(10 * MIB);
    let url = t.create(data.len() as u64).await?;
    let held = 4 * MIB + MIB / 2;
    let mut stalling = RawPatch::open(&url, 0, data.len()).await?;
    stalling
        .send(&data[..held], 256 * 1024, Duration::ZERO)
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spooled = spooled_bytes(pid, &spool)?;
    ensure!(
        spooled == held as u64,
        "a PATCH stalled {held} bytes into its first part has {spooled} bytes in spool files"
    );

    stalling
        .send(&data[held..], 256 * 1024, Duration::ZERO)
        .await?;
    let (status, head) = stalling
        .response(Duration::from_secs(20))
        .await?
        .context("the PATCH got no answer once resumed")?;
    ensure!(status == 204, "the resumed PATCH was answered {head:?}");
    let left = spooled_bytes(pid, &spool)?;
    ensure!(
        left == 0,
        "{left} bytes stay in spool files after the PATCH ended"
    );
    faults::check_exact(&t, &url, &data).await
}

/// A PATCH that completes a part started by earlier PATCHes (their bytes wait in tail
/// objects) copies the tails into the part: with a budget of exactly one part it must still
/// get room, not wait for a second part's worth while holding its own bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_that_folds_tails_fits_a_budget_of_one_part() -> Result<()> {
    let (single, _config) = s3_node_with_budget(5 * MIB, "10s", "1h").await?;
    let t = Ctx::for_endpoint(&single.node.endpoint)?;
    let data = random_bytes(8 * MIB);
    let url = t.create(data.len() as u64).await?;
    // Two PATCHes leave 3 MiB in tails; the third completes the first part and goes on.
    t.patch_ok(&url, 0, data[..MIB].to_vec()).await?;
    t.patch_ok(&url, MIB as u64, data[MIB..3 * MIB].to_vec())
        .await?;
    t.patch_ok(&url, 3 * MIB as u64, data[3 * MIB..].to_vec())
        .await
        .context("the PATCH that folds the tails into a part")?;
    faults::check_exact(&t, &url, &data).await
}

/// Every connection whose body is being read holds what reads of the socket took, and no
/// budget counts it: a chunk in hand, the next read, and on fs the chunks queued to the
/// writer thread (one, and one being written, when a chunk fills the write window). With
/// hyper's default read buffer (about 400 KiB) 40 clients sending at full speed raised the
/// node's peak by 38-39 MiB (18-20 with a 128 KiB buffer, 19-26 with 256 KiB), and the default
/// 4,096 connections could take gigabytes. The read buffer is 256 KiB (or the header limit
/// and 16 KiB, if larger).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_body_being_read_holds_a_bounded_read_buffer() -> Result<()> {
    // The least write window: the writer queue holds whole chunks, as they were read.
    let grown = peak_growth_of_parallel_patches("write_window = 4096").await?;
    // Each connection: five chunks of at most 256 KiB, and the allocator's slack.
    ensure!(
        grown < (PATCHES_AT_ONCE * 5 * 256 * 1024 + 8 * MIB) as u64,
        "{PATCHES_AT_ONCE} PATCHes read at full speed raised the node's peak memory by {} MiB",
        grown >> 20
    );
    Ok(())
}

/// The windows PATCH bodies gather for the disk share one budget (`write_buffer`): 40 bodies
/// at full speed with 1 MiB windows (what a body streaming alone writes in) hold the budget,
/// not 40 times three windows: 20-24 MiB over the node's peak, where without the budget (1 TiB)
/// they took 46-59 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_streaming_at_once_share_the_write_buffer() -> Result<()> {
    let grown =
        peak_growth_of_parallel_patches("write_window = 1048576\nwrite_buffer = 16777216").await?;
    // The budget, each connection's read buffer, and the allocator's slack.
    ensure!(
        grown < (16 * MIB + PATCHES_AT_ONCE * 256 * 1024 + 8 * MIB) as u64,
        "{PATCHES_AT_ONCE} PATCHes read at full speed raised the node's peak memory by {} MiB",
        grown >> 20
    );
    Ok(())
}

const PATCHES_AT_ONCE: usize = 40;

/// How much [`PATCHES_AT_ONCE`] PATCHes of 8 MiB sent at once at full speed raise the peak
/// memory of a node with `fs_settings` (lines of its `[storage.fs]`); every upload is checked
/// sha256-exact afterwards.
async fn peak_growth_of_parallel_patches(fs_settings: &str) -> Result<u64> {
    let scratch = tempfile::tempdir()?;
    let config = scratch.path().join("window.toml");
    std::fs::write(&config, format!("[storage.fs]\n{fs_settings}\n"))?;
    let config = config.display().to_string();
    let server = TestServer::start(&FsEmbedded, &["--config", &config]).await?;
    let pid = server.pid().context("no pid")?;
    let t = Ctx::new(&server)?;
    let data = random_bytes(8 * MIB);
    let mut patches = Vec::new();
    for _ in 0..PATCHES_AT_ONCE {
        let url = t.create(data.len() as u64).await?;
        patches.push((url.clone(), RawPatch::open(&url, 0, data.len()).await?));
    }
    let before = status_bytes(pid, "VmHWM")?;
    let sent = futures_util::future::join_all(patches.iter_mut().map(|(_, patch)| {
        let data = &data;
        async move {
            patch.send(data, 1 << 20, Duration::ZERO).await?;
            patch.response(Duration::from_secs(60)).await
        }
    }))
    .await;
    let grown = status_bytes(pid, "VmHWM")?.saturating_sub(before);
    eprintln!(
        "{PATCHES_AT_ONCE} PATCHes raised the peak by {} KiB ({fs_settings:?})",
        grown >> 10
    );
    for ((url, _), answer) in patches.iter().zip(sent) {
        let (status, head) = answer?.context("a PATCH got no answer")?;
        ensure!(status == 204, "a PATCH was answered {head:?}");
        faults::check_exact(&t, url, &data).await?;
    }
    Ok(grown)
}
