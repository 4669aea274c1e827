//! What the coordinator talks to: one Redis (a fixed address, or the master Sentinel names),
//! or a Redis Cluster, behind one connection type the scripts run on.
//!
//! On a cluster the client routes each script by its first key, and every key a script
//! touches shares that key's hash tag (see `Shared::upload_keys`), so a script runs on the
//! one shard that holds its upload.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Value};
use tusk_core::CoordError;

use crate::connection::{Connection, SentinelSettings};
use crate::unavailable;

pub(crate) enum Link {
    Single(Arc<Connection>),
    Cluster(Cluster),
}

pub(crate) struct Cluster {
    connection: ClusterConnection,
    /// The seed nodes; requests between nodes subscribe on one of them, the next after a
    /// failure.
    seeds: Vec<redis::Client>,
    subscribe_at: AtomicUsize,
}

/// A connection that scripts and commands run on, whichever Redis it reaches.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Link {
    pub async fn single(
        url: &str,
        sentinel: Option<SentinelSettings>,
        timeout: Duration,
    ) -> Result<Self, CoordError> {
        Ok(Self::Single(
            Connection::open(url, sentinel, timeout).await?,
        ))
    }

    /// A cluster found through `seeds` (`redis://` or `rediss://` URLs; credentials and TLS
    /// from them). Connects now: a cluster none of whose seeds answers is an error.
    pub async fn cluster(seeds: &[String], timeout: Duration) -> Result<Self, CoordError> {
        let invalid = |e: redis::RedisError| CoordError::Unavailable(format!("redis cluster: {e}"));
        let connection = ClusterClientBuilder::new(seeds.iter().map(String::as_str))
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(2)
            .build()
            .map_err(invalid)?
            .get_async_connection()
            .await
            .map_err(invalid)?;
        let seeds = seeds
            .iter()
            .map(|seed| {
                seed.as_str()
                    .into_connection_info()
                    .and_then(redis::Client::open)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        Ok(Self::Cluster(Cluster {
            connection,
            seeds,
            subscribe_at: AtomicUsize::new(0),
        }))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    pub fn conn(&self) -> Conn {
        match self {
            Self::Single(connection) => Conn::Single(connection.manager()),
            Self::Cluster(cluster) => Conn::Cluster(cluster.connection.clone()),
        }
    }

    /// Where to subscribe to requests between nodes. On a cluster any node hears what is
    /// published on any other (classic pub/sub is broadcast over the cluster bus); each call
    /// names the next seed, so a reconnection after a failure tries another.
    pub fn subscriber(&self) -> redis::Client {
        match self {
            Self::Single(connection) => connection.client(),
            Self::Cluster(cluster) => {
                let next = cluster.subscribe_at.fetch_add(1, Ordering::Relaxed);
                cluster.seeds[next % cluster.seeds.len()].clone()
            }
        }
    }

    /// Redis `WAIT` for `replicas` on the node that holds `key`: on a cluster, the shard of
    /// the upload just changed (a WAIT sent to every primary would wait for the others too).
    pub async fn wait(&self, key: &str, replicas: u32, timeout_ms: u64) -> Result<i64, CoordError> {
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas).arg(timeout_ms);
        match self.conn() {
            Conn::Single(mut conn) => wait.query_async(&mut conn).await.map_err(unavailable),
            Conn::Cluster(mut conn) => {
                let route = Route::with_key(key, SlotAddr::Master);
                let answer = conn
                    .route_command(
                        wait,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await
                    .map_err(unavailable)?;
                redis::FromRedisValue::from_redis_value(answer)
                    .map_err(|e| CoordError::Unavailable(format!("redis: WAIT answered {e}")))
            }
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}
