//! Requests between nodes, over Redis pub/sub: every node subscribes to two channels, and the
//! node holding the upload's lease acts on what it hears.
//!
//! - `release`: a request that found the lease taken publishes the upload ID; the holder asks
//!   its writer to stop, commit and let go.
//! - `settle`: a read that finds another node holding the lease publishes `<nonce> <id>`; the
//!   holder settles its PATCH of the upload (it waits for its client, or has made its last
//!   commit) and sets the key `settled:<nonce>`, which the reader polls along with the lease.

use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::AsyncCommands;
use tusk_core::{InFlightElsewhere, SettleLocally};

use crate::{RedisCoordinator, Shared};

/// How long a `settled:<nonce>` key outlives the answer it carries.
const ANSWER_TTL_MS: u64 = 10_000;
/// The longest pause between two looks for the answer.
const MAX_POLL_PAUSE: Duration = Duration::from_millis(20);

/// Routes the requests other nodes publish to this node's leases and PATCHes. Reconnects on
/// its own; while disconnected, waiting requests fall back to the lease TTL and reads to
/// their bound.
pub(crate) async fn listen(shared: Weak<Shared>) {
    loop {
        let Some((client, release, settle)) = shared
            .upgrade()
            .map(|s| (s.link.subscriber(), s.key("release"), s.key("settle")))
        else {
            return;
        };
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => {
                if let Err(error) = pubsub.subscribe(&[&release, &settle]).await {
                    tracing::warn!(%error, "subscribing to requests between nodes failed");
                } else {
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        let Some(shared) = shared.upgrade() else {
                            return;
                        };
                        let Ok(payload) = message.get_payload::<String>() else {
                            continue;
                        };
                        if message.get_channel_name() == release {
                            ask_to_release(&shared, &payload);
                        } else if let Some((nonce, id)) = payload.split_once(' ') {
                            answer_settle(shared, nonce.to_string(), id.to_string());
                        }
                    }
                }
            }
            Err(error) => tracing::debug!(%error, "the request subscription cannot connect"),
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

/// Settles this node's PATCH of `id` if this node holds its lease, then answers.
fn answer_settle(shared: Arc<Shared>, nonce: String, id: String) {
    if !shared.local().contains_key(&id) {
        return;
    }
    let Some(settle_locally) = shared.settle_locally.get().cloned() else {
        return;
    };
    tokio::spawn(async move {
        settle_locally(id).await;
        let answered: Result<(), _> = shared
            .conn()
            .set_options(
                shared.key(&format!("settled:{nonce}")),
                1,
                redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(ANSWER_TTL_MS)),
            )
            .await;
        if let Err(error) = answered {
            tracing::debug!(%error, "answering a settle request failed; the reader waits its bound");
        }
    });
}

#[async_trait]
impl InFlightElsewhere for RedisCoordinator {
    async fn settle(&self, id: &str, bound: Duration) {
        let shared = &self.shared;
        let deadline = tokio::time::Instant::now() + bound;
        let [lease_key, ..] = shared.upload_keys(id);
        let holder: Option<String> = match shared.conn().get(&lease_key).await {
            Ok(holder) => holder,
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
        let nonce = format!("{:016x}", rand::random::<u64>());
        let asked: Result<i64, _> = shared
            .conn()
            .publish(shared.key("settle"), format!("{nonce} {id}"))
            .await;
        if asked.is_err() {
            return;
        }
        let answer_key = shared.key(&format!("settled:{nonce}"));
        let mut pause = Duration::from_millis(2);
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_POLL_PAUSE);
            let looked: Result<(Option<String>, Option<String>), _> = redis::pipe()
                .get(&answer_key)
                .get(&lease_key)
                .query_async(&mut shared.conn())
                .await;
            match looked {
                // Answered, or the PATCH let go of the lease (its last commit is made).
                Ok((Some(_), _)) => return,
                Ok((None, now)) if now.as_ref() != Some(&holder) => return,
                Ok(_) => {}
                Err(_) => return,
            }
        }
    }

    fn serve(&self, settle_locally: SettleLocally) {
        let _ = self.shared.settle_locally.set(settle_locally);
    }
}
