//! The connection to the current Redis master: a fixed address, or the master that Redis
//! Sentinel names, followed across failovers.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};
use tusk_core::CoordError;

/// Where the Sentinels are and which master they watch.
#[derive(Debug, Clone)]
pub struct SentinelSettings {
    /// Sentinel addresses, e.g. `redis://10.0.0.5:26379`.
    pub sentinels: Vec<String>,
    /// The master's name in the Sentinel configuration, e.g. `mymaster`.
    pub master: String,
}

pub(crate) struct Connection {
    current: RwLock<(ConnectionManager, redis::Client)>,
    /// Credentials, database and TLS come from the configured URL; with Sentinel only the
    /// address changes.
    base: ConnectionInfo,
    sentinel: Option<SentinelSettings>,
    timeout: Duration,
}

fn invalid(e: impl std::fmt::Display) -> CoordError {
    CoordError::Unavailable(format!("redis: {e}"))
}

impl Connection {
    pub async fn open(
        url: &str,
        sentinel: Option<SentinelSettings>,
        timeout: Duration,
    ) -> Result<Arc<Self>, CoordError> {
        let base = url
            .into_connection_info()
            .map_err(|e| invalid(format!("invalid url: {e}")))?;
        let info = match &sentinel {
            Some(s) => Self::with_master(&base, Self::ask_sentinels(s, timeout).await?),
            None => base.clone(),
        };
        let current = Self::connect(info, timeout).await?;
        let connection = Arc::new(Self {
            current: RwLock::new(current),
            base,
            sentinel,
            timeout,
        });
        if connection.sentinel.is_some() {
            tokio::spawn(Self::follow_master(Arc::downgrade(&connection)));
        }
        Ok(connection)
    }

    async fn connect(
        info: ConnectionInfo,
        timeout: Duration,
    ) -> Result<(ConnectionManager, redis::Client), CoordError> {
        let client = redis::Client::open(info).map_err(invalid)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let manager = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(invalid)?;
        Ok((manager, client))
    }

    fn with_master(base: &ConnectionInfo, (host, port): (String, u16)) -> ConnectionInfo {
        let addr = match base.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host, port),
        };
        base.clone().set_addr(addr)
    }

    /// The master's address as the first Sentinel that answers names it.
    async fn ask_sentinels(
        settings: &SentinelSettings,
        timeout: Duration,
    ) -> Result<(String, u16), CoordError> {
        let mut last_error = String::from("no sentinels configured");
        for sentinel in &settings.sentinels {
            let answer = async {
                let client = redis::Client::open(sentinel.as_str())?;
                let mut conn = client.get_multiplexed_async_connection().await?;
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(&settings.master)
                    .query_async::<Option<(String, u16)>>(&mut conn)
                    .await
            };
            match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(Some(address))) => return Ok(address),
                Ok(Ok(None)) => {
                    last_error = format!("{sentinel} knows no master {}", settings.master)
                }
                Ok(Err(e)) => last_error = format!("{sentinel}: {e}"),
                Err(_) => last_error = format!("{sentinel}: timed out"),
            }
        }
        Err(invalid(last_error))
    }

    /// Follows failovers: asks the Sentinels every second and reconnects when the master
    /// moved. Requests in between fail with 503 and are retried by clients.
    async fn follow_master(this: Weak<Self>) {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let Some(connection) = this.upgrade() else {
                return;
            };
            let Some(settings) = &connection.sentinel else {
                return;
            };
            let master = match Self::ask_sentinels(settings, connection.timeout).await {
                Ok(master) => master,
                Err(error) => {
                    tracing::warn!(%error, "cannot ask Redis Sentinel for the master");
                    continue;
                }
            };
            let info = Self::with_master(&connection.base, master);
            if connection.client().get_connection_info().addr() == info.addr() {
                continue;
            }
            tracing::warn!(master = %info.addr(), "redis master moved; reconnecting");
            match Self::connect(info, connection.timeout).await {
                Ok(current) => {
                    *connection
                        .current
                        .write()
                        .unwrap_or_else(|e| e.into_inner()) = current;
                }
                Err(error) => tracing::warn!(%error, "connecting to the new redis master failed"),
            }
        }
    }

    pub fn manager(&self) -> ConnectionManager {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    pub fn client(&self) -> redis::Client {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }
}
