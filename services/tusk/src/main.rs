//! The `tusk` binary: configuration, wiring of the engine to its backends, the listener,
//! signals. Everything with logic lives in the crates.

mod admin_client;
mod check_data;
mod cli;
mod config;
mod environment;
mod healthcheck;
mod inspect;
mod tusd;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::FromArgMatches;
use tokio::io::AsyncWriteExt;
use tusk_coord_etcd::{EtcdCoordinator, EtcdSettings, EtcdTls};
use tusk_coord_redis::{RedisCoordinator, RedisSettings, SentinelSettings};
use tusk_core::embedded::{self, EmbeddedCoordinator};
use tusk_core::{CoordError, Engine, EngineConfig};
use tusk_http::{HttpConfig, ServeLimits, TrustedProxy};
use tusk_store_fs::{FsOptions, FsStorage, PartFiles};
use tusk_store_gcs::GcsStorage;
use tusk_store_s3::S3Storage;

use crate::cli::{Cli, Command};
use crate::config::{Config, CoordinatorBackend, ProxyHeaders, StorageBackend};

fn main() -> Result<()> {
    tune_the_allocator();
    let (args, warnings) = match tusd::translate(std::env::args_os().collect()) {
        Ok(translated) => translated,
        Err(refusal) => {
            eprintln!("error: {refusal}");
            std::process::exit(2);
        }
    };
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
    let matches = cli::command().get_matches_from(args);
    let cli = Cli::from_arg_matches(&matches)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Some(Command::Bench(args)) => runtime.block_on(tusk_bench::run(args)),
        Some(Command::CheckData(args)) => check_data::run(&args),
        Some(Command::Healthcheck(args)) => healthcheck::run(&args),
        Some(Command::Inspect(args)) => inspect::inspect(&args),
        Some(Command::Uploads(args)) => inspect::uploads(&args),
        Some(Command::ConfigReference(args)) if args.tusd => {
            print!("{}", tusd::migration_table());
            Ok(())
        }
        Some(Command::ConfigReference(_)) => {
            print!("{}", cli::reference_markdown());
            Ok(())
        }
        Some(Command::Serve(flags)) => {
            let settings = matches.subcommand_matches("serve").unwrap_or(&matches);
            let loaded = load_config(flags.config.as_deref(), cli::setting_overrides(settings))?;
            runtime.block_on(serve(loaded))
        }
        None => {
            let loaded = load_config(
                cli.serve.config.as_deref(),
                cli::setting_overrides(&matches),
            )?;
            runtime.block_on(serve(loaded))
        }
    }
}

/// Tunes glibc's allocator for buffers that stream through.
///
/// - Every allocation of 1 MiB or more is its own mapping, unmapped when freed. glibc
///   otherwise raises that threshold after the first large free and then serves S3 part
///   buffers (16 MiB) from per-thread arenas that keep the memory: measured with four parts
///   in flight, peak RSS was 133-148 MiB with the default and 85 MiB with this.
/// - Freed memory below that stays in the arenas up to 64 MiB instead of 128 KiB. With the
///   default, the read buffers of a body (hyper's, up to ~400 KiB, freed once their bytes
///   are on disk) went back to the system and came back as fresh zeroed pages all the time:
///   a 1 GiB PATCH took 59,000 minor page faults and 1.19 s of system CPU, and 1,700 faults
///   and 0.93 s with this (`minflt`/`stime` in /proc/PID/stat, same peak RSS, 19 MiB).
fn tune_the_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes tuning parameters; it is called before any other thread
    // exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

/// The configuration, and the `TUSK_*` variables that were not read as settings.
struct Loaded {
    config: Config,
    ignored_variables: Vec<String>,
}

/// Defaults < TOML file < TUSK_<SECTION>__<KEY> environment < flags.
fn load_config(
    file: Option<&Path>,
    overrides: Vec<(&'static str, ::config::Value)>,
) -> Result<Loaded> {
    let defaults = ::config::Config::try_from(&Config::default())?;
    let variables = environment::settings_in(std::env::vars(), &cli::setting_keys())
        .map_err(anyhow::Error::msg)
        .context("invalid configuration")?;
    let mut builder = ::config::Config::builder().add_source(defaults);
    if let Some(path) = file {
        builder = builder.add_source(::config::File::from(path).format(::config::FileFormat::Toml));
    }
    builder = builder.add_source(
        ::config::Environment::with_prefix("TUSK")
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("coordinator.redis.sentinels")
            .with_list_parse_key("coordinator.redis.cluster_nodes")
            .with_list_parse_key("coordinator.etcd.endpoints")
            .with_list_parse_key("hooks.events")
            .with_list_parse_key("hooks.credential_headers")
            .with_list_parse_key("hooks.forward_headers")
            .with_list_parse_key("server.cors_allow_origin")
            .with_list_parse_key("server.cors_allow_headers")
            .with_list_parse_key("server.cors_expose_headers")
            .source(Some(variables.settings.into_iter().collect())),
    );
    for (key, value) in overrides {
        builder = builder.set_override(key, value)?;
    }
    let config: Config = builder
        .build()
        .context("reading configuration")?
        .try_deserialize()
        .context("invalid configuration")?;
    config.validate().map_err(anyhow::Error::msg)?;
    Ok(Loaded {
        config,
        ignored_variables: variables.ignored,
    })
}

fn engine_config(config: &Config) -> EngineConfig {
    let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
    EngineConfig {
        max_size: (config.uploads.max_size > 0).then_some(config.uploads.max_size),
        expire_after: nonzero(config.uploads.expire_after),
        tombstone_ttl: config.uploads.tombstone_ttl,
        lease_wait: config.uploads.lease_wait,
        network_timeout: config.server.network_timeout,
        lease_renew_interval: config.coordinator.lease_ttl / 3,
        commit_interval_bytes: config.uploads.commit_interval_bytes,
        commit_interval: config.uploads.commit_interval,
        max_parts_per_final: config.uploads.max_parts_per_final,
        node: node_name(),
        termination: config.uploads.termination,
        concatenation: config.uploads.concatenation,
    }
}

/// `<hostname>/<pid>`: the pod (or host) and the process, so a restarted node is told apart
/// from its previous life in `tusk inspect`.
fn node_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer it is given.
    let named = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let host = if named {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "unknown-host".into()
    };
    format!("{host}/{}", std::process::id())
}

async fn serve(loaded: Loaded) -> Result<()> {
    let config = loaded.config;
    // Kept until serve returns: dropping it flushes the spans not yet exported.
    let _telemetry = tusk_telemetry::init(
        config.log.format,
        &config.log.level,
        &tusk_telemetry::TraceExport {
            otlp_endpoint: config.log.otlp_endpoint.clone(),
            otlp_ca_file: config.log.otlp_ca_file.clone(),
            service_name: config.log.service_name.clone(),
        },
    )
    .context("setting up logging and trace export")?;
    for name in &loaded.ignored_variables {
        tracing::debug!(
            variable = %name,
            "environment variable ignored: only TUSK_<SECTION>__<KEY> is configuration"
        );
    }
    let mut signalled = watch_for_signals();
    let metrics = Arc::new(tusk_telemetry::Metrics::new().context("setting up metrics")?);
    let render_metrics: tusk_http::RenderMetrics = {
        let metrics = metrics.clone();
        Arc::new(move || metrics.render())
    };
    let limits = ServeLimits {
        header_read_timeout: config.server.header_read_timeout,
        idle_timeout: config.server.idle_timeout,
        max_connections: config.server.max_connections,
        http2_keep_alive_interval: (!config.server.http2_keep_alive_interval.is_zero())
            .then_some(config.server.http2_keep_alive_interval),
        max_header_bytes: config.server.max_header_bytes,
        drain: config.server.shutdown_drain,
        interim_responses: config.server.interim_responses,
        // One per CPU this process may use (affinity and cgroup quota count).
        connection_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    // The admin listener first: while the backends come up, /healthz answers and /readyz
    // says what the node waits for.
    let admin_listener = tokio::net::TcpListener::bind((
        config.server.admin_host.as_str(),
        config.server.admin_port,
    ))
    .await
    .with_context(|| {
        format!(
            "binding admin {}:{}",
            config.server.admin_host, config.server.admin_port
        )
    })?;
    let admin_addr = admin_listener.local_addr()?;
    let metrics_endpoint = tusk_http::MetricsEndpoint {
        path: config.server.metrics_path.clone(),
        render: render_metrics,
    };
    let admin_routes = tusk_http::AdminRoutes::starting(metrics_endpoint.clone());
    let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin = tokio::spawn(tusk_http::serve(
        admin_listener.into(),
        None,
        admin_routes.router(),
        ServeLimits {
            max_connections: ADMIN_MAX_CONNECTIONS,
            drain: Duration::from_secs(1),
            interim_responses: false,
            // A scrape or a probe now and then: the shared runtime serves them.
            connection_threads: 0,
            ..limits.clone()
        },
        // The connection metrics are the public listener's.
        Arc::new(Unobserved),
        async move {
            let _ = admin_stopped.await;
        },
    ));
    // The lines on stdout: scripts and the test harness wait for them.
    let mut stdout = tokio::io::stdout();
    stdout
        .write_all(format!("admin on http://{admin_addr}/\n").as_bytes())
        .await?;
    stdout.flush().await?;
    let backends = tokio::select! {
        backends = start_backends(&config, &admin_routes) => backends?,
        _ = signalled.wait_for(|s| *s) => {
            tracing::info!("stopped before the backends came up");
            return Ok(());
        }
    };
    let (storage, coordinator) = backends;

    // Declared at start, so a node that has re-sent nothing shows 0 rather than no series.
    tusk_core::Observer::bytes_rewritten(metrics.as_ref(), storage.name(), 0);
    let hooks = tusk_hooks::HttpHooks::new(config.hooks.clone(), metrics.clone())
        .context("setting up hooks")?;
    let engine = Arc::new(
        Engine::observed(
            storage,
            coordinator,
            engine_config(&config),
            metrics.clone(),
        )
        .with_hooks(hooks),
    );
    let http = HttpConfig {
        base_path: config.server.base_path.clone(),
        proxy: config.server.behind_proxy.then_some(TrustedProxy {
            headers: match config.server.proxy_headers {
                ProxyHeaders::XForwarded => tusk_http::ProxyHeaders::XForwarded,
                ProxyHeaders::Forwarded => tusk_http::ProxyHeaders::Forwarded,
            },
            hops: config.server.proxy_hops,
        }),
        cors: config
            .server
            .cors_policy()
            .map_err(anyhow::Error::msg)?
            .map(Arc::new),
        max_metadata_bytes: config.uploads.max_metadata_size,
        max_header_bytes: config.server.max_header_bytes,
        presigned_get: config.storage.presigned_get(),
        download: config.uploads.download,
    };
    let router = tusk_http::router(engine.clone(), http);
    let tls = config
        .server
        .tls()
        .map_err(anyhow::Error::msg)?
        .map(Arc::new);
    if let Some(tls) = &tls {
        tls.clone()
            .watch()
            .context("listening for SIGHUP (TLS certificate reloads)")?;
    }
    let (listener, addr) = bind(&config.server, tls.is_some()).await?;
    admin_routes.serve_engine(tusk_http::admin_router(engine.clone(), metrics_endpoint));
    tracing::info!(
        %addr,
        %admin_addr,
        storage = config.storage.backend_name(),
        coordinator = config.coordinator.backend_name(),
        "tusk serving"
    );
    stdout
        .write_all(format!("listening on {addr}{}\n", config.server.base_path).as_bytes())
        .await?;
    stdout.flush().await?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sweeper = tokio::spawn(engine.clone().run_sweeper(config.uploads.sweep_interval, {
        let mut stop = stop_rx.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    }));
    let shutdown = {
        let engine = engine.clone();
        async move {
            let _ = signalled.wait_for(|s| *s).await;
            tracing::info!("shutting down: committing in-flight uploads");
            engine.begin_shutdown();
            let _ = stop_tx.send(true);
        }
    };
    tusk_http::serve(
        listener,
        tls.map(|tls| tls.config()),
        router,
        limits,
        engine.observer().clone(),
        shutdown,
    )
    .await?;
    // Readiness keeps answering "shutting down" until uploads have drained.
    let _ = admin_stop.send(());
    let _ = admin.await;
    let _ = sweeper.await;
    tracing::info!("stopped");
    Ok(())
}

/// The upload listener: the unix socket when one is configured, else `host`:`port`; and its
/// URL without the base path (`http://127.0.0.1:8080`, `https://...`, `unix:/run/tusk.sock`).
async fn bind(server: &config::ServerConfig, tls: bool) -> Result<(tusk_http::Listener, String)> {
    if !server.unix_socket.is_empty() {
        let path = Path::new(&server.unix_socket);
        remove_stale_socket(path).await?;
        let listener = tokio::net::UnixListener::bind(path)
            .with_context(|| format!("binding the unix socket {}", path.display()))?;
        return Ok((
            tusk_http::Listener::Unix(listener),
            format!("unix:{}", path.display()),
        ));
    }
    let listener = tokio::net::TcpListener::bind((server.host.as_str(), server.port))
        .await
        .with_context(|| format!("binding {}:{}", server.host, server.port))?;
    let scheme = if tls { "https" } else { "http" };
    let addr = format!("{scheme}://{}", listener.local_addr()?);
    Ok((listener.into(), addr))
}

/// Removes a socket file nothing listens on any more (a crashed node's); refuses to take
/// over one a live process serves, and any file that is not a socket.
async fn remove_stale_socket(path: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        anyhow::bail!(
            "server.unix_socket: {} exists and is not a socket",
            path.display()
        );
    }
    if tokio::net::UnixStream::connect(path).await.is_ok() {
        anyhow::bail!(
            "server.unix_socket: another process listens on {}",
            path.display()
        );
    }
    std::fs::remove_file(path)
        .with_context(|| format!("removing the stale socket {}", path.display()))
}

/// Connections the admin listener (metrics, health probes) keeps open at most: scrapers and
/// probes need few, and an internal port is no reason to let idle sockets pile up.
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Opens storage and coordinator and waits until both answer. A backend that refuses for a
/// reason waiting will not fix (no such bucket, rejected credentials) stops the start with
/// one line naming the setting to change; one that cannot be reached is tried again, the node
/// staying unready (its /readyz says what it waits for) until it answers.
async fn start_backends(
    config: &Config,
    admin: &tusk_http::AdminRoutes,
) -> Result<(Arc<dyn tusk_core::Storage>, Arc<dyn tusk_core::Coordinator>)> {
    if config.storage.backend == StorageBackend::Fs
        && config.coordinator.backend == CoordinatorBackend::Embedded
    {
        return open_single_node(config).await;
    }
    let mut waiting = StartWait::default();
    let storage = open_storage(config).await?;
    loop {
        match storage.check_at_start().await {
            Ok(()) => break,
            Err(error @ tusk_core::StorageError::Misconfigured { .. }) => {
                anyhow::bail!("{} storage cannot work: {error}", storage.name())
            }
            Err(error) => {
                waiting
                    .wait(admin, format!("{} storage: {error}", storage.name()))
                    .await
            }
        }
    }
    let coordinator = loop {
        match open_coordinator(config).await {
            Ok(coordinator) => break coordinator,
            // A remote coordinator may come up; the embedded one's directory held by another
            // process is a second process started by mistake, refused at once.
            Err(error)
                if config.coordinator.backend != CoordinatorBackend::Embedded
                    && error
                        .chain()
                        .any(|e| matches!(e.downcast_ref(), Some(CoordError::Unavailable(_)))) =>
            {
                waiting
                    .wait(
                        admin,
                        format!(
                            "{} coordinator: {error:#}",
                            config.coordinator.backend_name()
                        ),
                    )
                    .await
            }
            Err(error) => return Err(error),
        }
    };
    // Some clients connect lazily (etcd): ask once it is open.
    while let Err(error) = coordinator.ping().await {
        waiting
            .wait(
                admin,
                format!("{} coordinator: {error}", coordinator.name()),
            )
            .await;
    }
    if waiting.tries > 0 {
        tracing::info!(tries = waiting.tries, "backends answer: starting");
    }
    Ok((storage, coordinator))
}

/// The pauses between tries of an unreachable backend at start, and their log lines: the
/// first failure and then one every 30 s, each one line.
#[derive(Default)]
struct StartWait {
    tries: u32,
    logged_at: Option<tokio::time::Instant>,
}

impl StartWait {
    async fn wait(&mut self, admin: &tusk_http::AdminRoutes, what: String) {
        self.tries += 1;
        let due = self
            .logged_at
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(30));
        if due {
            tracing::warn!(tries = self.tries, "not ready: waiting for {what}");
            self.logged_at = Some(tokio::time::Instant::now());
        }
        admin.waiting_for(what);
        // 250 ms, doubling to 5 s.
        let pause = Duration::from_millis(250).saturating_mul(1 << self.tries.min(5));
        tokio::time::sleep(pause.min(Duration::from_secs(5))).await;
    }
}

/// Local disk and the embedded coordinator: the coordinator's log carries the small
/// writes, so one sync makes a small PATCH's bytes and its commit durable.
async fn open_single_node(
    config: &Config,
) -> Result<(Arc<dyn tusk_core::Storage>, Arc<dyn tusk_core::Coordinator>)> {
    let dir = &config.storage.fs.dir;
    let opening = || format!("opening upload dir {}", dir.display());
    let files = PartFiles::open(dir).with_context(opening)?;
    let coordinator = open_embedded(config, Some(files.clone())).await?;
    let options = FsOptions {
        carrier: coordinator.carrier(),
        ..fs_options(config)
    };
    let storage = FsStorage::on(&files, options).with_context(opening)?;
    Ok((Arc::new(storage), coordinator))
}

fn fs_options(config: &Config) -> FsOptions {
    FsOptions {
        write_window: config.storage.fs.write_window,
        write_buffer: config.storage.fs.write_buffer,
        // Nodes sharing the directory look for each other's orphaned journals as often as
        // the sweeper runs.
        adopt_interval: config.uploads.sweep_interval,
        ..FsOptions::default()
    }
}

/// The storage backend the configuration names.
async fn open_storage(config: &Config) -> Result<Arc<dyn tusk_core::Storage>> {
    Ok(match config.storage.backend {
        StorageBackend::Fs => Arc::new(
            FsStorage::with_options(&config.storage.fs.dir, fs_options(config)).with_context(
                || format!("opening upload dir {}", config.storage.fs.dir.display()),
            )?,
        ),
        StorageBackend::S3 => Arc::new(
            S3Storage::connect(&config.storage.s3, engine_config(config).max_size)
                .await
                .context("setting up S3 storage")?,
        ),
        StorageBackend::Gcs => Arc::new(
            GcsStorage::connect(&config.storage.gcs)
                .await
                .context("setting up GCS storage")?,
        ),
    })
}

/// The embedded coordinator, carrying the small writes of `files` if given.
async fn open_embedded(
    config: &Config,
    files: Option<Arc<PartFiles>>,
) -> Result<Arc<EmbeddedCoordinator>> {
    let dir = config
        .coordinator
        .embedded
        .dir
        .clone()
        .unwrap_or_else(|| config.storage.fs.dir.join(".tusk"));
    let opened = match files {
        Some(files) => {
            EmbeddedCoordinator::open_carrying(&dir, files, embedded::COMPACT_AFTER_BYTES).await
        }
        None => EmbeddedCoordinator::open(&dir).await,
    };
    opened.map_err(|e| match e {
        CoordError::Corrupt(_) => anyhow::Error::new(e).context(format!(
            "the embedded coordinator's directory {} is damaged, so Tusk does not start: \
             `tusk check-data --dir {} --salvage` keeps every intact frame (README: \
             Recovering a damaged data directory)",
            dir.display(),
            dir.display()
        )),
        e => anyhow::Error::new(e).context(format!(
            "opening the embedded coordinator in {}",
            dir.display()
        )),
    })
}

/// The coordinator the configuration names; `CoordError::Unavailable` when it cannot be
/// reached now (the caller retries), anything else when the settings are wrong.
async fn open_coordinator(config: &Config) -> Result<Arc<dyn tusk_core::Coordinator>> {
    Ok(match config.coordinator.backend {
        CoordinatorBackend::Embedded => open_embedded(config, None).await?,
        CoordinatorBackend::Redis => {
            let redis = &config.coordinator.redis;
            if !redis.cluster_nodes.is_empty() && !redis.sentinels.is_empty() {
                anyhow::bail!(
                    "coordinator.redis.cluster_nodes and coordinator.redis.sentinels exclude \
                     each other: a Redis Cluster fails over by itself"
                );
            }
            RedisCoordinator::connect(RedisSettings {
                url: redis.url.clone(),
                prefix: redis.prefix.clone(),
                lease_ttl: config.coordinator.lease_ttl,
                timeout: redis.timeout,
                sentinel: (!redis.sentinels.is_empty()).then(|| SentinelSettings {
                    sentinels: redis.sentinels.clone(),
                    master: redis.sentinel_master.clone(),
                }),
                wait_replicas: redis.wait_replicas,
                cluster_nodes: redis.cluster_nodes.clone(),
            })
            .await
            .context("connecting to Redis")?
        }
        CoordinatorBackend::Etcd => {
            let etcd = &config.coordinator.etcd;
            let credentials = match (&etcd.user, &etcd.password) {
                (Some(user), Some(password)) => Some((user.clone(), password.clone())),
                (None, None) => None,
                _ => {
                    anyhow::bail!("coordinator.etcd.user and coordinator.etcd.password go together")
                }
            };
            let read = |path: &std::path::Path| {
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))
            };
            let identity = match (&etcd.cert_file, &etcd.key_file) {
                (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
                (None, None) => None,
                _ => anyhow::bail!(
                    "coordinator.etcd.cert_file and coordinator.etcd.key_file go together"
                ),
            };
            let tls = match (&etcd.ca_file, identity) {
                (Some(ca), identity) => Some(EtcdTls {
                    ca_pem: read(ca)?,
                    identity,
                }),
                (None, None) => None,
                (None, Some(_)) => anyhow::bail!(
                    "coordinator.etcd.cert_file needs coordinator.etcd.ca_file (TLS to etcd)"
                ),
            };
            EtcdCoordinator::connect(EtcdSettings {
                endpoints: etcd.endpoints.clone(),
                prefix: etcd.prefix.clone(),
                lease_ttl: config.coordinator.lease_ttl,
                timeout: etcd.timeout,
                credentials,
                tls,
            })
            .await
            .context("connecting to etcd")?
        }
    })
}

/// Records nothing.
struct Unobserved;

impl tusk_core::Observer for Unobserved {}

/// SIGTERM or SIGINT as a flag that stays set, listened for from the start: a wait that
/// begins later still sees a signal that came before it (once Tusk handles a signal, the
/// default action no longer ends the process, so a missed one would be ignored).
fn watch_for_signals() -> tokio::sync::watch::Receiver<bool> {
    let (signal, signalled) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = signal.send(true);
    });
    signalled
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every list setting reads a comma-separated flag as a list, also one whose default is
    /// empty (found by the cluster tests: `--redis-cluster-nodes a,b` was read as one string).
    #[test]
    fn list_flags_take_comma_separated_values() {
        let matches = cli::command().get_matches_from([
            "tusk",
            "--redis-cluster-nodes",
            "redis://a:1/,redis://b:2/",
            "--hooks-credential-headers",
            "authorization,cookie",
            "--cors-allow-headers",
            "x-a,x-b",
            "--etcd-endpoints",
            "http://e1:2379,http://e2:2379",
        ]);
        let config = load_config(None, cli::setting_overrides(&matches))
            .expect("the flags read")
            .config;
        assert_eq!(config.coordinator.redis.cluster_nodes.len(), 2);
        assert_eq!(config.hooks.credential_headers, ["authorization", "cookie"]);
        assert_eq!(config.server.cors_allow_headers, ["x-a", "x-b"]);
        assert_eq!(config.coordinator.etcd.endpoints.len(), 2);
    }

    /// The dotted keys that hold a value in `config` (an empty list holds none).
    fn keys_with_values(config: &::config::Config) -> BTreeSet<String> {
        fn walk(
            prefix: &str,
            table: ::config::Map<String, ::config::Value>,
            keys: &mut BTreeSet<String>,
        ) {
            for (name, value) in table {
                let key = if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}.{name}")
                };
                match value.clone().into_table() {
                    Ok(inner) => walk(&key, inner, keys),
                    Err(_) => {
                        keys.insert(key);
                    }
                }
            }
        }
        let mut keys = BTreeSet::new();
        walk("", config.clone().try_deserialize().unwrap(), &mut keys);
        keys
    }

    /// The documented keys are the ones the environment may set, so every setting must be
    /// among them.
    #[test]
    fn every_setting_is_documented() {
        let defaults = ::config::Config::try_from(&Config::default()).unwrap();
        let documented = cli::setting_keys();
        let settings = keys_with_values(&defaults);
        assert!(
            settings.contains("coordinator.embedded.dir"),
            "an unset option is a key"
        );
        for key in settings {
            assert!(documented.contains(&key), "{key} is not in cli.rs's table");
        }
    }
}
