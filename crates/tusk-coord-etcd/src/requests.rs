//! Requests between nodes, over one etcd watch per node on the `q/` keys; the node holding
//! the upload's lease acts on what it sees.
//!
//! - `q/r/<id>`: a request that found the lease taken writes it; the holder asks its writer
//!   to stop, commit and let go.
//! - `q/s/<id>/<nonce>`: a read that finds another node holding the lease writes it; the
//!   holder settles its PATCH of the upload (it waits for its client, or has made its last
//!   commit) and deletes the key, which the reader polls for along with the lock.
//!
//! etcd-client does not reconnect a watch by itself: when the stream ends or fails, this
//! opens a new one. A release request written meanwhile is missed, and the waiter writes it
//! again every half second; a settle request missed costs the reader its bound.

use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{EventType, GetOptions, Txn, TxnOp, WatchOptions};
use tusk_core::{InFlightElsewhere, SettleLocally};

use crate::{read_kvs, EtcdCoordinator, Shared};

/// The longest pause between two looks for the answer to a settle request.
const MAX_POLL_PAUSE: Duration = Duration::from_millis(20);

pub(crate) async fn listen(shared: Weak<Shared>) {
    loop {
        let Some(upgraded) = shared.upgrade() else {
            return;
        };
        let prefix = upgraded.keys.requests();
        let (member, watching) = upgraded
            .endpoints
            .watch(&prefix, WatchOptions::new().with_prefix())
            .await;
        drop(upgraded);
        match watching {
            Ok(mut stream) => loop {
                match stream.message().await {
                    Ok(Some(answer)) => {
                        let Some(shared) = shared.upgrade() else {
                            return;
                        };
                        for event in answer.events() {
                            let Some(kv) = event.kv() else { continue };
                            if event.event_type() != EventType::Put {
                                continue;
                            }
                            let Some(request) = kv.key().strip_prefix(prefix.as_bytes()) else {
                                continue;
                            };
                            let request = String::from_utf8_lossy(request);
                            if let Some(id) = request.strip_prefix("r/") {
                                ask_to_release(&shared, id);
                            } else if let Some((id, _nonce)) =
                                request.strip_prefix("s/").and_then(|r| r.rsplit_once('/'))
                            {
                                answer_settle(shared.clone(), id.to_string(), kv.key().to_vec());
                            }
                        }
                        if answer.canceled() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        tracing::debug!(%error, "the request watch ended");
                        break;
                    }
                }
            },
            Err(error) => tracing::debug!(%error, "the request watch cannot start"),
        }
        // Reopened on the next member: this one may be the reason it ended.
        if let Some(shared) = shared.upgrade() {
            shared.endpoints.watch_failed(member);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn ask_to_release(shared: &Shared, id: &str) {
    let held = shared.local.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, ask)) = held.get(id) {
        ask.send_replace(true);
    }
}

/// Settles this node's PATCH of `id` if this node holds its lease, then deletes the request.
fn answer_settle(shared: Arc<Shared>, id: String, request: Vec<u8>) {
    if !shared.local().contains_key(&id) {
        return;
    }
    let Some(settle_locally) = shared.settle_locally.get().cloned() else {
        return;
    };
    tokio::spawn(async move {
        settle_locally(id).await;
        if let Err(error) = shared.kv().delete(request, None).await {
            tracing::debug!(%error, "answering a settle request failed; the reader waits its bound");
        }
    });
}

#[async_trait]
impl InFlightElsewhere for EtcdCoordinator {
    async fn settle(&self, id: &str, bound: Duration) {
        let shared = &self.shared;
        let deadline = tokio::time::Instant::now() + bound;
        let lock = shared.keys.lock(id);
        let holder = match shared.kv().get(lock.as_str(), None).await {
            Ok(answer) => answer.kvs().first().map(|kv| kv.create_revision()),
            Err(error) => {
                tracing::debug!(%error, upload_id = %id, "cannot tell whether another node writes");
                return;
            }
        };
        let Some(holder) = holder else {
            return; // nobody writes
        };
        if shared.local().contains_key(id) {
            return; // this node's own lease: the engine has settled its PATCH already
        }
        let request = shared
            .keys
            .settle_request(id, &format!("{:016x}", rand::random::<u64>()));
        if shared.kv().put(request.as_str(), "", None).await.is_err() {
            return;
        }
        let mut pause = Duration::from_millis(2);
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_POLL_PAUSE);
            let looked = shared
                .kv()
                .txn(Txn::new().and_then([
                    TxnOp::get(request.as_str(), Some(GetOptions::new().with_count_only())),
                    TxnOp::get(lock.as_str(), None),
                ]))
                .await;
            let Ok(looked) = looked else { break };
            let responses = looked.op_responses();
            let answered = match responses.first() {
                Some(etcd_client::TxnOpResponse::Get(get)) => get.count() == 0,
                _ => true,
            };
            let same_holder = read_kvs(&responses, 1)
                .first()
                .is_some_and(|kv| kv.create_revision() == holder);
            // Answered, or the PATCH let go of the lease (its last commit is made).
            if answered || !same_holder {
                break;
            }
        }
        // Unanswered requests go too (an answered one is gone already).
        let _ = shared.kv().delete(request, None).await;
    }

    fn serve(&self, settle_locally: SettleLocally) {
        let _ = self.shared.settle_locally.set(settle_locally);
    }
}
