//! Release requests between nodes, over one etcd watch per node: a request that finds a
//! lease taken writes the upload ID's key under `q/`, and the node holding the lease asks
//! its writer to stop, commit and let go.
//!
//! etcd-client does not reconnect a watch by itself: when the stream ends or fails, this
//! opens a new one. A request written meanwhile is missed, and the waiter writes it again
//! every half second, so a reconnect costs at most that.

use std::sync::{PoisonError, Weak};
use std::time::Duration;

use etcd_client::{EventType, WatchOptions};

use crate::Shared;

pub(crate) async fn listen(shared: Weak<Shared>) {
    loop {
        let Some((mut watcher, prefix)) = shared
            .upgrade()
            .map(|s| (s.client.watch_client(), s.keys.requests()))
        else {
            return;
        };
        match watcher
            .watch(prefix.as_str(), Some(WatchOptions::new().with_prefix()))
            .await
        {
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
                            let Some(id) = kv.key().strip_prefix(prefix.as_bytes()) else {
                                continue;
                            };
                            ask_to_release(&shared, &String::from_utf8_lossy(id));
                        }
                        if answer.canceled() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        tracing::debug!(%error, "the release-request watch ended");
                        break;
                    }
                }
            },
            Err(error) => tracing::debug!(%error, "the release-request watch cannot start"),
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
