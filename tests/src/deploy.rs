//! A deployment is a storage half and a coordinator half ([`Pair`]): each half starts the
//! services it needs and says what a node needs to use them, so a new backend (GCS, etcd)
//! adds one half and runs with every half of the other kind, on a single node and (if every
//! node can share it) in a cluster ([`crate::cluster`]).
//!
//! The pairs the conformance suite runs on: [`FsEmbedded`], [`S3_EMBEDDED`], [`GCS_EMBEDDED`]
//! (single nodes)
//! and [`FsRedis`](crate::cluster::FsRedis), [`S3Redis`](crate::s3::S3Redis),
//! [`FS_ETCD_NGINX`](crate::cluster::FS_ETCD_NGINX),
//! [`S3_ETCD_NGINX`](crate::cluster::S3_ETCD_NGINX) (clusters).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::etcd::EtcdServer;
use crate::gcs::{GcsBucket, GcsStorage};
use crate::harness::{Backend, BoxFuture, Deployment, NodeOptions, Running, TestServer};
use crate::redis::RedisServer;
use crate::redis_cluster::RedisClusterServer;
use crate::s3::{S3Bucket, S3Storage};

/// What the started halves of a deployment run and tell every node; dropping it stops the
/// services.
#[derive(Default)]
pub struct Shared {
    /// Arguments every node gets (storage and coordinator), before a test's own.
    pub node_args: Vec<String>,
    /// Environment variables every node gets (e.g. the AWS credentials of an S3 backend).
    pub env: Vec<(String, String)>,
    /// The Redis the nodes share, when the backend uses one.
    pub redis: Option<RedisServer>,
    /// The Redis Cluster the nodes share, when the backend uses one.
    pub redis_cluster: Option<RedisClusterServer>,
    /// The etcd the nodes share, when the backend uses one.
    pub etcd: Option<EtcdServer>,
    /// The S3 bucket the nodes share (and the server holding it), when the backend uses one.
    pub s3: Option<S3Bucket>,
    /// The GCS bucket the nodes share (and the emulator holding it), when the backend uses
    /// one.
    pub gcs: Option<GcsBucket>,
}

impl Shared {
    /// Both halves' services and settings in one.
    pub fn merge(mut self, other: Shared) -> Shared {
        self.node_args.extend(other.node_args);
        self.env.extend(other.env);
        self.redis = self.redis.or(other.redis);
        self.redis_cluster = self.redis_cluster.or(other.redis_cluster);
        self.etcd = self.etcd.or(other.etcd);
        self.s3 = self.s3.or(other.s3);
        self.gcs = self.gcs.or(other.gcs);
        self
    }
}

/// Where upload bytes live.
pub trait StorageHalf: Send + Sync {
    /// Short name used in test output, e.g. `s3`.
    fn name(&self) -> &'static str;
    /// Whether a GET of an upload that is not finished streams its committed bytes (true),
    /// or answers 409 because the storage cannot read it yet (S3: an unfinished multipart
    /// upload cannot be read).
    fn reads_unfinished(&self) -> bool {
        true
    }
    /// Starts what every node shares, its data under `dir`.
    fn start<'a>(&'a self, _dir: &'a Path) -> BoxFuture<'a, Result<Shared>> {
        Box::pin(async { Ok(Shared::default()) })
    }
    /// Arguments of one node whose own directory is `node_dir` (kept across its restarts).
    fn node_args(&self, _node_dir: &Path) -> Vec<String> {
        Vec::new()
    }
}

/// Where records and leases live.
pub trait CoordinatorHalf: Send + Sync {
    /// Short name used in test output, e.g. `redis`.
    fn name(&self) -> &'static str;
    /// Starts what every node shares, its data under `dir`.
    fn start<'a>(&'a self, _dir: &'a Path) -> BoxFuture<'a, Result<Shared>> {
        Box::pin(async { Ok(Shared::default()) })
    }
    /// Arguments of one node whose own directory is `node_dir` (kept across its restarts).
    fn node_args(&self, _node_dir: &Path) -> Vec<String> {
        Vec::new()
    }
    /// Environment of one node whose own directory is `node_dir`.
    fn node_env(&self, _node_dir: &Path) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// A half that starts nothing: a node runs it from its own directory alone, so it can be
/// started, killed and restarted on its own ([`TestServer::start`]).
pub trait NodeLocal {}

/// A half every node of a cluster can use at once: they see the same bytes, or the same
/// records and leases. Only pairs of such halves make a [`ClusterBackend`].
///
/// [`ClusterBackend`]: crate::cluster::ClusterBackend
pub trait SharedByNodes {}

/// A storage half and a coordinator half: a single node as a [`Deployment`] (a node with
/// its services), a [`Backend`] when both halves are [`NodeLocal`], a
/// [`ClusterBackend`](crate::cluster::ClusterBackend) when both are [`SharedByNodes`].
#[derive(Clone, Copy, Debug)]
pub struct Pair<S, C> {
    /// Where the bytes live.
    pub storage: S,
    /// Where records and leases live.
    pub coordinator: C,
}

impl<S: StorageHalf, C: CoordinatorHalf> Pair<S, C> {
    /// `storage+coordinator`, e.g. `s3+embedded`.
    pub fn name(&self) -> String {
        format!("{}+{}", self.storage.name(), self.coordinator.name())
    }

    /// Starts both halves' services under `dir`.
    pub async fn start_shared(&self, dir: &Path) -> Result<Shared> {
        let storage = self
            .storage
            .start(dir)
            .await
            .with_context(|| format!("starting the storage half of {}", self.name()))?;
        let coordinator = self
            .coordinator
            .start(dir)
            .await
            .with_context(|| format!("starting the coordinator half of {}", self.name()))?;
        Ok(storage.merge(coordinator))
    }

    /// Both halves' arguments for the node whose own directory is `node_dir`.
    pub fn node_args(&self, node_dir: &Path) -> Vec<String> {
        let mut args = self.storage.node_args(node_dir);
        args.extend(self.coordinator.node_args(node_dir));
        args
    }

    /// Both halves' environment for the node whose own directory is `node_dir`.
    pub fn node_env(&self, node_dir: &Path) -> Vec<(String, String)> {
        self.coordinator.node_env(node_dir)
    }
}

impl<S, C> Backend for Pair<S, C>
where
    S: StorageHalf + NodeLocal,
    C: CoordinatorHalf + NodeLocal,
{
    fn name(&self) -> String {
        Pair::name(self)
    }
    fn node_args(&self, dir: &Path) -> Vec<String> {
        Pair::node_args(self, dir)
    }
    fn node_env(&self, dir: &Path) -> Vec<(String, String)> {
        Pair::node_env(self, dir)
    }
}

impl<S: StorageHalf, C: CoordinatorHalf> Deployment for Pair<S, C> {
    fn name(&self) -> String {
        Pair::name(self)
    }
    fn reads_unfinished(&self) -> bool {
        self.storage.reads_unfinished()
    }
    fn start<'a>(&'a self, extra_args: &'a [&'a str]) -> BoxFuture<'a, Result<Box<dyn Running>>> {
        Box::pin(async move {
            let node = SingleNode::start(self, extra_args).await?;
            Ok(Box::new(node) as Box<dyn Running>)
        })
    }
}

/// One node of a [`Pair`] with the services its halves started.
pub struct SingleNode {
    /// The node.
    pub node: TestServer,
    /// The services (dropped after the node: fields drop in order).
    pub shared: Shared,
    /// The directory of the services' data and the node's own directory (`node0`).
    pub dir: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
}

impl SingleNode {
    /// Starts the pair's services, then one node with `extra_args`.
    pub async fn start<S: StorageHalf, C: CoordinatorHalf>(
        pair: &Pair<S, C>,
        extra_args: &[&str],
    ) -> Result<Self> {
        let tempdir = tempfile::Builder::new().prefix("tusk-single-").tempdir()?;
        let dir = tempdir.path().to_path_buf();
        let shared = pair.start_shared(&dir).await?;
        let node_dir = dir.join("node0");
        std::fs::create_dir_all(&node_dir)?;
        let mut args = shared.node_args.clone();
        args.extend(pair.node_args(&node_dir));
        args.extend(extra_args.iter().map(|s| s.to_string()));
        let mut env = shared.env.clone();
        env.extend(pair.node_env(&node_dir));
        let node = TestServer::start_with(NodeOptions {
            args: args.clone(),
            env,
            label: String::new(),
        })
        .await
        .with_context(|| format!("starting a {} node with {args:?}", pair.name()))?;
        Ok(SingleNode {
            node,
            shared,
            dir,
            _tempdir: Some(tempdir),
        })
    }
}

impl Running for SingleNode {
    fn endpoint(&self) -> &str {
        &self.node.endpoint
    }
    fn keep_dirs(&mut self) -> Vec<PathBuf> {
        if let Some(t) = self._tempdir.take() {
            let _ = t.keep();
        }
        self.node.keep_dir();
        vec![self.dir.clone(), self.node.dir.clone()]
    }
}

// ---------------------------------------------------------------------------------------------
// The halves without a service of their own (Redis and S3 live beside their servers)

/// Bytes on the node's own disk.
#[derive(Clone, Copy, Debug)]
pub struct FsLocal;

impl StorageHalf for FsLocal {
    fn name(&self) -> &'static str {
        "fs"
    }
    fn node_args(&self, node_dir: &Path) -> Vec<String> {
        vec![
            "--upload-dir".into(),
            node_dir.join("data").display().to_string(),
        ]
    }
}

impl NodeLocal for FsLocal {}

/// One upload directory every node uses (the shape of NFS or a shared volume).
#[derive(Clone, Copy, Debug)]
pub struct FsShared;

impl StorageHalf for FsShared {
    fn name(&self) -> &'static str {
        "fs(shared)"
    }
    fn start<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, Result<Shared>> {
        Box::pin(async move {
            let uploads = dir.join("uploads");
            std::fs::create_dir_all(&uploads)?;
            Ok(Shared {
                node_args: vec!["--upload-dir".into(), uploads.display().to_string()],
                ..Shared::default()
            })
        })
    }
}

impl SharedByNodes for FsShared {}

/// Records and leases in the node's own write-ahead log; leases are in-process, so a
/// single node only.
#[derive(Clone, Copy, Debug)]
pub struct Embedded;

impl CoordinatorHalf for Embedded {
    fn name(&self) -> &'static str {
        "embedded"
    }
    fn node_args(&self, _node_dir: &Path) -> Vec<String> {
        vec!["--coordinator".into(), "embedded".into()]
    }
    fn node_env(&self, node_dir: &Path) -> Vec<(String, String)> {
        // Its default is `<upload-dir>/.tusk`, which a node without fs storage does not have
        // (it would land in the test's working directory).
        vec![(
            "TUSK_COORDINATOR__EMBEDDED__DIR".into(),
            node_dir.join("records").display().to_string(),
        )]
    }
}

impl NodeLocal for Embedded {}

// ---------------------------------------------------------------------------------------------
// The pairs

/// Local disk for bytes, the embedded coordinator for records and leases. Named like the
/// unit struct it was, as a type and a value, so `&FsEmbedded` and `SingleBehind<FsEmbedded>`
/// still compile.
pub type FsEmbedded = Pair<FsLocal, Embedded>;

/// See the type [`FsEmbedded`].
#[allow(non_upper_case_globals)]
pub const FsEmbedded: FsEmbedded = Pair {
    storage: FsLocal,
    coordinator: Embedded,
};

/// A single node storing bytes in a bucket on moto (16 MiB parts), records and leases in
/// its embedded coordinator.
pub const S3_EMBEDDED: Pair<S3Storage, Embedded> = Pair {
    storage: S3Storage::DEFAULT,
    coordinator: Embedded,
};

/// A single node storing bytes in a bucket on fake-gcs-server, records and leases in its
/// embedded coordinator.
pub const GCS_EMBEDDED: Pair<GcsStorage, Embedded> = Pair {
    storage: GcsStorage::DEFAULT,
    coordinator: Embedded,
};
