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

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use etcd_client::{
    Client, ConnectOptions, DeleteOptions, DeleteResponse, Error, GetOptions, GetResponse,
    KvClient, PutOptions, PutResponse, Txn, TxnResponse, WatchClient,
};

/// gRPC status codes (`tonic::Code`) that say the member, not the request, failed.
const CANCELLED: i32 = 1;
const UNKNOWN: i32 = 2;
const DEADLINE_EXCEEDED: i32 = 4;
const UNAVAILABLE: i32 = 14;

pub(crate) struct Endpoints {
    clients: Vec<Client>,
    current: AtomicUsize,
}

impl Endpoints {
    /// One client per endpoint; they connect when first used. Nodes start on a member of
    /// their own choice, so that their reads spread.
    pub async fn connect(endpoints: &[String], options: ConnectOptions) -> Result<Self, Error> {
        let mut clients = Vec::new();
        for endpoint in endpoints {
            clients.push(Client::connect([endpoint], Some(options.clone())).await?);
        }
        if clients.is_empty() {
            return Err(Error::InvalidArgs("no etcd endpoint".into()));
        }
        let first = rand::random::<u32>() as usize % clients.len();
        Ok(Self {
            clients,
            current: AtomicUsize::new(first),
        })
    }

    fn pick(&self) -> (usize, &Client) {
        let index = self.current.load(Ordering::Relaxed) % self.clients.len();
        (index, &self.clients[index])
    }

    /// Moves on from member `index` (unless another call has already).
    fn failed(&self, index: usize) {
        let next = (index + 1) % self.clients.len();
        let _ = self
            .current
            .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// A watch client on the current member, and a way to leave it if the watch fails.
    pub fn watch_client(&self) -> (usize, WatchClient) {
        let (index, client) = self.pick();
        (index, client.watch_client())
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
        for _ in 0..self.clients.len() {
            let (index, client) = self.pick();
            match op(client.kv_client()).await {
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
