//! etcd's members, one client each, and moving on to the next member when one fails.
//!
//! etcd-client balances requests over every endpoint it was given, but keeps sending some to
//! a member that is down: with one of three members killed, a third of the calls failed
//! with "tcp connect error" for as long as the member stayed down (the three-member test
//! in tests/tests/cluster_etcd.rs). So each member gets a client of its own, calls go to
//! the current one, and a member that fails a call is left for the next. A call that
//! certainly did not reach etcd (the connection was refused, or the member had no leader
//! and refused it) is tried on the next member at once; any other failure is answered
//! "unavailable" (503), since the change may have been made.
//!
//! A member's client is made when it is first needed, not at start: with a user and
//! password etcd-client authenticates while connecting, and a node must start (and answer
//! 503) while etcd is down. A member that answers at start and refuses the credentials
//! stops the start instead: that will not mend itself.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use etcd_client::{
    Client, ConnectOptions, DeleteOptions, DeleteResponse, Error, GetOptions, GetResponse,
    KvClient, PutOptions, PutResponse, Txn, TxnResponse, WatchOptions, WatchStream,
};
use tokio::sync::OnceCell;

/// gRPC status codes (`tonic::Code`) that say the member, not the request, failed.
const CANCELLED: i32 = 1;
const UNKNOWN: i32 = 2;
const DEADLINE_EXCEEDED: i32 = 4;
const UNAVAILABLE: i32 = 14;
const UNAUTHENTICATED: i32 = 16;

pub(crate) struct Endpoints {
    members: Vec<Member>,
    options: ConnectOptions,
    current: AtomicUsize,
}

struct Member {
    endpoint: String,
    client: OnceCell<Client>,
}

impl Endpoints {
    /// One client per endpoint, connected now where the member answers and otherwise when
    /// first used. Nodes start on a member of their own choice, so that their reads spread.
    pub async fn connect(endpoints: &[String], options: ConnectOptions) -> Result<Self, Error> {
        if endpoints.is_empty() {
            return Err(Error::InvalidArgs("no etcd endpoint".into()));
        }
        let members: Vec<Member> = endpoints
            .iter()
            .map(|endpoint| Member {
                endpoint: endpoint.clone(),
                client: OnceCell::new(),
            })
            .collect();
        let first = rand::random::<u32>() as usize % members.len();
        let endpoints = Self {
            members,
            options,
            current: AtomicUsize::new(first),
        };
        let attempts = (0..endpoints.members.len()).map(|index| endpoints.client(index));
        for attempt in futures_util::future::join_all(attempts).await {
            match attempt {
                Err(error) if !member_failed(&error) => return Err(error),
                _ => {}
            }
        }
        Ok(endpoints)
    }

    /// Member `index`'s client, connecting it if it is not yet.
    async fn client(&self, index: usize) -> Result<Client, Error> {
        let member = &self.members[index];
        member
            .client
            .get_or_try_init(|| Client::connect([&member.endpoint], Some(self.options.clone())))
            .await
            .cloned()
    }

    fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed) % self.members.len()
    }

    /// Moves on from member `index` (unless another call has already).
    fn failed(&self, index: usize) {
        let next = (index + 1) % self.members.len();
        let _ = self
            .current
            .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// A watch of `key` on the current member (and which member that is, for
    /// [`Endpoints::watch_failed`]).
    pub async fn watch(
        &self,
        key: &str,
        options: WatchOptions,
    ) -> (usize, Result<WatchStream, Error>) {
        let index = self.current();
        let watching = match self.client(index).await {
            Ok(client) => {
                with_live_token(&client, || {
                    let (mut watcher, options) = (client.watch_client(), options.clone());
                    async move { watcher.watch(key, Some(options)).await }
                })
                .await
            }
            Err(error) => Err(error),
        };
        (index, watching)
    }

    pub fn watch_failed(&self, index: usize) {
        self.failed(index);
    }

    async fn call<T, F, Fut>(&self, op: F) -> Result<T, Error>
    where
        F: Fn(KvClient) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let mut last = None;
        for _ in 0..self.members.len() {
            let index = self.current();
            let answer = match self.client(index).await {
                Ok(client) => with_live_token(&client, || op(client.kv_client())).await,
                Err(error) => Err(error),
            };
            match answer {
                Ok(answer) => return Ok(answer),
                Err(error) => {
                    if member_failed(&error) {
                        self.failed(index);
                    }
                    if !never_reached(&error) {
                        return Err(error);
                    }
                    last = Some(error);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::InvalidArgs("no etcd endpoint".into())))
    }

    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse, Error> {
        self.call(|mut kv| {
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await
    }

    pub async fn get(
        &self,
        key: impl Into<Vec<u8>>,
        options: Option<GetOptions>,
    ) -> Result<GetResponse, Error> {
        let key = key.into();
        self.call(|mut kv| {
            let (key, options) = (key.clone(), options.clone());
            async move { kv.get(key, options).await }
        })
        .await
    }

    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        options: Option<PutOptions>,
    ) -> Result<PutResponse, Error> {
        let (key, value) = (key.into(), value.into());
        self.call(|mut kv| {
            let (key, value, options) = (key.clone(), value.clone(), options.clone());
            async move { kv.put(key, value, options).await }
        })
        .await
    }

    pub async fn delete(
        &self,
        key: impl Into<Vec<u8>>,
        options: Option<DeleteOptions>,
    ) -> Result<DeleteResponse, Error> {
        let key = key.into();
        self.call(|mut kv| {
            let (key, options) = (key.clone(), options.clone());
            async move { kv.delete(key, options).await }
        })
        .await
    }
}

/// The member (or the way to it) failed, not the request.
fn member_failed(error: &Error) -> bool {
    match error {
        Error::TransportError(_) | Error::IoError(_) => true,
        Error::GRpcStatus(status) => matches!(
            i32::from(status.code()),
            CANCELLED | UNKNOWN | DEADLINE_EXCEEDED | UNAVAILABLE
        ),
        _ => false,
    }
}

/// `op` on `client`, once more with a new auth token if etcd refused the one it had: etcd
/// forgets a token idle past `--auth-token-ttl` (5 minutes) or over a restart, and
/// etcd-client does not ask for a new one by itself.
async fn with_live_token<T, Fut>(client: &Client, op: impl Fn() -> Fut) -> Result<T, Error>
where
    Fut: Future<Output = Result<T, Error>>,
{
    match op().await {
        Err(error) if token_expired(&error) => {
            client.refresh_token().await?;
            op().await
        }
        answer => answer,
    }
}

/// etcd refused the client's auth token (not its credentials: those are checked when a
/// token is asked for).
fn token_expired(error: &Error) -> bool {
    match error {
        Error::GRpcStatus(status) => {
            i32::from(status.code()) == UNAUTHENTICATED
                && status.message().contains("invalid auth token")
        }
        _ => false,
    }
}

/// The request certainly did not reach etcd's log: no connection was made, or the member
/// had no leader and refused it (`with_require_leader`).
fn never_reached(error: &Error) -> bool {
    match error {
        Error::GRpcStatus(status) => {
            i32::from(status.code()) == UNAVAILABLE
                && (status.message().contains("tcp connect error")
                    || status.message().contains("no leader"))
        }
        _ => false,
    }
}
