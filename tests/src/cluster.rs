//! A Tusk cluster on loopback for the end-to-end tests: the shared services (Redis from
//! Debian's `redis-server`, a shared upload directory or an S3 bucket on moto's server, see
//! [`crate::s3`]), several `tusk` nodes, and a real load balancer in front ([`crate::balancer`]).
//!
//! A [`ClusterBackend`] says what the nodes share and how a node is configured: any
//! [`Pair`] of halves every node can share ([`crate::deploy`]). The rest (nodes, balancer,
//! faults) is the same for every backend: [`FsRedis`] and [`S3Redis`](crate::s3::S3Redis) run
//! the same cluster tests, and an etcd or GCS half runs them by being one more half.
//!
//! Every server this needs must be installed: a missing one fails the test with the command
//! that installs it (`apt-get install`, or pip for moto; tests/run.sh installs them).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::deploy::{CoordinatorHalf, FsShared, Pair, SharedByNodes, StorageHalf};
use crate::etcd::{Etcd, EtcdServer};
use crate::gcs::{GcsBucket, GcsStorage};
use crate::harness::{BoxFuture, Deployment, NodeOptions, Running, TestServer};
use crate::redis::Redis;
use crate::s3::{S3Bucket, S3Redis, S3Storage};

// The process utilities, Redis and the balancers lived here first; test files name them here.
pub use crate::balancer::{render_config, Balancer, LoadBalancer};
pub use crate::deploy::Shared;
pub use crate::process::{free_port, require_binary, unique_name};
pub use crate::redis::RedisServer;
use crate::redis_cluster::RedisCluster;
pub use crate::redis_cluster::RedisClusterServer;

// ---------------------------------------------------------------------------------------------
// Clusters

/// How the nodes of a cluster are configured: which services they share and which arguments
/// make a node use them. Every [`Pair`] of halves that nodes can share is one.
pub trait ClusterBackend: Send + Sync {
    /// Short name used in test output, e.g. `fs(shared)+redis`.
    fn name(&self) -> String;
    /// Starts the shared services with their data under `dir`.
    fn start_shared<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, Result<Shared>>;
    /// Arguments of the node whose own directory is `node_dir`, after the shared ones.
    fn node_args(&self, _node_dir: &Path) -> Vec<String> {
        Vec::new()
    }
    /// Environment of the node whose own directory is `node_dir`, after the shared one.
    fn node_env(&self, _node_dir: &Path) -> Vec<(String, String)> {
        Vec::new()
    }
    /// Whether a GET of an upload that is not finished streams its committed bytes (true),
    /// or answers 409 because the storage cannot read it yet (S3: an unfinished multipart
    /// upload cannot be read).
    fn reads_unfinished(&self) -> bool {
        true
    }
}

impl<S, C> ClusterBackend for Pair<S, C>
where
    S: StorageHalf + SharedByNodes,
    C: CoordinatorHalf + SharedByNodes,
{
    fn name(&self) -> String {
        Pair::name(self)
    }
    fn start_shared<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, Result<Shared>> {
        Box::pin(Pair::start_shared(self, dir))
    }
    fn node_args(&self, node_dir: &Path) -> Vec<String> {
        Pair::node_args(self, node_dir)
    }
    fn node_env(&self, node_dir: &Path) -> Vec<(String, String)> {
        Pair::node_env(self, node_dir)
    }
    fn reads_unfinished(&self) -> bool {
        self.storage.reads_unfinished()
    }
}

/// One upload directory shared by every node, Redis for records and leases. Named like the
/// unit struct it was, as a type and a value, so `&FsRedis` and
/// `ClusterDeployment<FsRedis>` still compile.
pub type FsRedis = Pair<FsShared, Redis>;

/// See the type [`FsRedis`].
#[allow(non_upper_case_globals)]
pub const FsRedis: FsRedis = Pair {
    storage: FsShared,
    coordinator: Redis,
};

/// Nodes of a [`ClusterBackend`] behind a load balancer.
pub struct Cluster {
    /// The nodes, each with its own address (and admin address).
    pub nodes: Vec<TestServer>,
    /// The load balancer in front of them.
    pub lb: LoadBalancer,
    /// The shared Redis, if the backend has one.
    pub redis: Option<RedisServer>,
    /// The shared Redis Cluster, if the backend has one.
    pub redis_cluster: Option<RedisClusterServer>,
    /// The shared etcd, if the backend has one.
    pub etcd: Option<EtcdServer>,
    /// The shared S3 bucket, if the backend has one.
    pub s3: Option<S3Bucket>,
    /// The shared GCS bucket, if the backend has one.
    pub gcs: Option<GcsBucket>,
    /// Whether a GET of an unfinished upload streams its committed bytes (see
    /// [`ClusterBackend::reads_unfinished`]).
    pub reads_unfinished: bool,
    /// The upload endpoint through the load balancer, e.g. `http://127.0.0.1:PORT/files/`.
    pub endpoint: String,
    /// The directory of the shared services' data (shared uploads, Redis data).
    pub dir: PathBuf,
    name: String,
    _tempdir: Option<tempfile::TempDir>,
}

impl Cluster {
    /// Starts the shared services, `nodes` nodes (each with `--behind-proxy` and
    /// `extra_args`; the harness gives each an admin listener on a free port) and the
    /// balancer in front of them.
    pub async fn start(
        backend: &dyn ClusterBackend,
        balancer: Balancer,
        nodes: usize,
        extra_args: &[&str],
    ) -> Result<Self> {
        // Fail on a missing balancer before starting anything else.
        balancer.binary()?;
        let tempdir = tempfile::Builder::new().prefix("tusk-cluster-").tempdir()?;
        let dir = tempdir.path().to_path_buf();
        let shared = backend
            .start_shared(&dir)
            .await
            .with_context(|| format!("starting the services of {}", backend.name()))?;
        let mut started = Vec::new();
        for i in 0..nodes {
            let node_dir = dir.join(format!("node{i}"));
            std::fs::create_dir_all(&node_dir)?;
            let mut args = shared.node_args.clone();
            args.extend(backend.node_args(&node_dir));
            if !extra_args.contains(&"--behind-proxy") {
                args.push("--behind-proxy".into());
            }
            args.extend(extra_args.iter().map(|s| s.to_string()));
            let mut env = shared.env.clone();
            env.extend(backend.node_env(&node_dir));
            let node = TestServer::start_with(NodeOptions {
                args: args.clone(),
                env,
                label: format!("node{i}"),
            })
            .await
            .with_context(|| format!("starting node {i} with {args:?}"))?;
            started.push(node);
        }
        let upstreams: Vec<String> = started.iter().map(|n| n.addr.clone()).collect();
        let lb = LoadBalancer::start(balancer, &upstreams).await?;
        let base_path = started[0]
            .endpoint
            .trim_start_matches("http://")
            .find('/')
            .map(|i| started[0].endpoint.trim_start_matches("http://")[i..].to_string())
            .context("node endpoint without a path")?;
        let endpoint = format!("{}{base_path}", lb.base_url());
        Ok(Cluster {
            nodes: started,
            lb,
            redis: shared.redis,
            redis_cluster: shared.redis_cluster,
            etcd: shared.etcd,
            s3: shared.s3,
            gcs: shared.gcs,
            reads_unfinished: backend.reads_unfinished(),
            endpoint,
            dir,
            name: format!("{} x{nodes} behind {}", backend.name(), balancer.name()),
            _tempdir: Some(tempdir),
        })
    }

    /// The shared Redis (fails for a backend without one).
    pub fn redis(&mut self) -> Result<&mut RedisServer> {
        self.redis.as_mut().context("this cluster has no Redis")
    }

    /// The shared etcd (fails for a backend without one).
    pub fn etcd(&mut self) -> Result<&mut EtcdServer> {
        self.etcd.as_mut().context("this cluster has no etcd")
    }

    /// Kills the shared coordinator (Redis or etcd) with SIGKILL.
    pub async fn kill_coordinator(&mut self) -> Result<()> {
        match (&mut self.redis, &mut self.etcd) {
            (Some(redis), _) => redis.kill9().await,
            (None, Some(etcd)) => etcd.kill9().await,
            (None, None) => anyhow::bail!("this cluster has no shared coordinator"),
        }
    }

    /// Starts the shared coordinator again on its port and data.
    pub async fn start_coordinator_again(&mut self) -> Result<()> {
        match (&mut self.redis, &mut self.etcd) {
            (Some(redis), _) => redis.start_again().await,
            (None, Some(etcd)) => etcd.start_again().await,
            (None, None) => anyhow::bail!("this cluster has no shared coordinator"),
        }
    }

    /// The keys the nodes keep in the shared coordinator (Redis or etcd) under the test
    /// prefix: how a test sees that the nodes use it.
    pub async fn coordinator_keys(&self) -> Result<Vec<String>> {
        if let Some(redis) = &self.redis {
            return redis.keys("tusk-test-*").await;
        }
        if let Some(cluster) = &self.redis_cluster {
            return cluster.keys("tusk-test-*").await;
        }
        if let Some(etcd) = &self.etcd {
            return etcd.keys("tusk-test-").await;
        }
        anyhow::bail!("this cluster has no shared coordinator")
    }

    /// The shared Redis Cluster (fails for a backend without one).
    pub fn redis_cluster(&mut self) -> Result<&mut RedisClusterServer> {
        self.redis_cluster
            .as_mut()
            .context("this cluster has no Redis Cluster")
    }

    /// The shared S3 bucket (fails for a backend without one).
    pub fn s3(&self) -> Result<&S3Bucket> {
        self.s3.as_ref().context("this cluster has no S3 bucket")
    }

    /// The shared GCS bucket; fails if the backend has none.
    pub fn gcs(&self) -> Result<&GcsBucket> {
        self.gcs.as_ref().context("this cluster has no GCS bucket")
    }

    /// The URL of the same upload on node `i` directly (bypassing the balancer).
    pub fn at_node(&self, i: usize, upload_url: &str) -> Result<String> {
        let id = upload_url
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .filter(|id| !id.is_empty())
            .with_context(|| format!("no upload id in {upload_url:?}"))?;
        let node = self.nodes.get(i).context("no such node")?;
        Ok(format!("{}{id}", node.endpoint))
    }

    /// Short description for messages, e.g. `fs(shared)+redis x3 behind nginx`.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Running for Cluster {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }
    fn node_endpoint(&self) -> &str {
        &self.nodes[0].endpoint
    }
    fn keep_dirs(&mut self) -> Vec<PathBuf> {
        let mut dirs = vec![];
        if let Some(t) = self._tempdir.take() {
            let _ = t.keep();
        }
        dirs.push(self.dir.clone());
        dirs.push(self.lb.keep_dir());
        for n in &mut self.nodes {
            n.keep_dir();
            dirs.push(n.dir.clone());
        }
        dirs
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Stopped nodes must be continued to die cleanly; kill_on_drop does the rest.
        for n in &self.nodes {
            if n.is_running() {
                let _ = n.signal("CONT");
            }
        }
    }
}

/// A [`Deployment`] of a cluster: the conformance suite through a load balancer, where every
/// request may land on any node.
pub struct ClusterDeployment<B> {
    /// How nodes are configured.
    pub backend: B,
    /// The balancer in front.
    pub balancer: Balancer,
    /// How many nodes.
    pub nodes: usize,
}

/// Three nodes on a shared directory with Redis, behind nginx.
pub const FS_REDIS_NGINX: ClusterDeployment<FsRedis> = ClusterDeployment {
    backend: FsRedis,
    balancer: Balancer::Nginx,
    nodes: 3,
};

/// Three nodes on one S3 bucket (moto) with Redis, behind nginx.
pub const S3_REDIS_NGINX: ClusterDeployment<Pair<S3Storage, Redis>> = ClusterDeployment {
    backend: S3Redis::DEFAULT.pair(),
    balancer: Balancer::Nginx,
    nodes: 3,
};

/// One upload directory shared by every node, etcd for records and leases.
pub type FsEtcd = Pair<FsShared, Etcd>;

/// Three nodes on a shared directory with etcd, behind nginx.
pub const FS_ETCD_NGINX: ClusterDeployment<FsEtcd> = ClusterDeployment {
    backend: Pair {
        storage: FsShared,
        coordinator: Etcd,
    },
    balancer: Balancer::Nginx,
    nodes: 3,
};

/// Three nodes on one GCS bucket (fake-gcs-server) with Redis, behind nginx.
pub const GCS_REDIS_NGINX: ClusterDeployment<Pair<GcsStorage, Redis>> = ClusterDeployment {
    backend: Pair {
        storage: GcsStorage::DEFAULT,
        coordinator: Redis,
    },
    balancer: Balancer::Nginx,
    nodes: 3,
};

/// Three nodes on one S3 bucket (moto) with etcd, behind nginx.
pub const S3_ETCD_NGINX: ClusterDeployment<Pair<S3Storage, Etcd>> = ClusterDeployment {
    backend: Pair {
        storage: S3Storage::DEFAULT,
        coordinator: Etcd,
    },
    balancer: Balancer::Nginx,
    nodes: 3,
};

/// Three nodes on a shared directory with a Redis Cluster (3 masters, 3 replicas), behind
/// nginx.
pub const FS_REDIS_CLUSTER_NGINX: ClusterDeployment<Pair<FsShared, RedisCluster>> =
    ClusterDeployment {
        backend: Pair {
            storage: FsShared,
            coordinator: RedisCluster,
        },
        balancer: Balancer::Nginx,
        nodes: 3,
    };

/// Three nodes on one S3 bucket (moto) with a Redis Cluster, behind nginx.
pub const S3_REDIS_CLUSTER_NGINX: ClusterDeployment<Pair<S3Storage, RedisCluster>> =
    ClusterDeployment {
        backend: Pair {
            storage: S3Storage::DEFAULT,
            coordinator: RedisCluster,
        },
        balancer: Balancer::Nginx,
        nodes: 3,
    };

/// Three nodes on a shared directory with Redis, behind HAProxy.
pub const FS_REDIS_HAPROXY: ClusterDeployment<FsRedis> = ClusterDeployment {
    backend: FsRedis,
    balancer: Balancer::Haproxy,
    nodes: 3,
};

impl<B: ClusterBackend> Deployment for ClusterDeployment<B> {
    fn name(&self) -> String {
        format!(
            "{} x{} behind {}",
            self.backend.name(),
            self.nodes,
            self.balancer.name()
        )
    }
    fn reads_unfinished(&self) -> bool {
        self.backend.reads_unfinished()
    }
    fn start<'a>(&'a self, extra_args: &'a [&'a str]) -> BoxFuture<'a, Result<Box<dyn Running>>> {
        Box::pin(async move {
            let cluster =
                Cluster::start(&self.backend, self.balancer, self.nodes, extra_args).await?;
            Ok(Box::new(cluster) as Box<dyn Running>)
        })
    }
}

/// A single node of any [`Backend`](crate::harness::Backend) behind a balancer: checks the
/// balancer configs against a server without cluster support, and is a smoke test of the
/// deploy files.
pub struct SingleBehind<B> {
    /// How the node is configured.
    pub backend: B,
    /// The balancer in front.
    pub balancer: Balancer,
}

/// A node and the balancer in front of it.
pub struct RunningSingle {
    /// The node.
    pub node: TestServer,
    /// The balancer.
    pub lb: LoadBalancer,
    endpoint: String,
}

impl Running for RunningSingle {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }
    fn node_endpoint(&self) -> &str {
        &self.node.endpoint
    }
    fn keep_dirs(&mut self) -> Vec<PathBuf> {
        self.node.keep_dir();
        vec![self.node.dir.clone(), self.lb.keep_dir()]
    }
}

impl<B: crate::harness::Backend> Deployment for SingleBehind<B> {
    fn name(&self) -> String {
        format!("{} behind {}", self.backend.name(), self.balancer.name())
    }
    fn start<'a>(&'a self, extra_args: &'a [&'a str]) -> BoxFuture<'a, Result<Box<dyn Running>>> {
        Box::pin(async move {
            self.balancer.binary()?;
            let mut args = extra_args.to_vec();
            if !args.contains(&"--behind-proxy") {
                args.push("--behind-proxy");
            }
            let node = TestServer::start(&self.backend, &args).await?;
            // Three upstream lines to the one node: the rendered config has its real shape.
            let upstreams = vec![node.addr.clone(); 3];
            let lb = LoadBalancer::start(self.balancer, &upstreams).await?;
            let path = node
                .endpoint
                .trim_start_matches("http://")
                .split_once('/')
                .map(|(_, p)| p.to_string())
                .context("node endpoint without a path")?;
            let endpoint = format!("{}/{path}", lb.base_url());
            Ok(Box::new(RunningSingle { node, lb, endpoint }) as Box<dyn Running>)
        })
    }
}
