//! The coordinator contract on the embedded coordinator.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tusk_core::contract::{coordinator_contract, CoordinatorFixture};
use tusk_core::embedded::EmbeddedCoordinator;
use tusk_core::Coordinator;

/// One embedded coordinator: a single node, whose leases never expire by themselves.
struct Embedded {
    node: Arc<EmbeddedCoordinator>,
    _dir: tempfile::TempDir,
}

#[async_trait]
impl CoordinatorFixture for Embedded {
    async fn node(&self) -> Arc<dyn Coordinator> {
        self.node.clone()
    }

    fn lease_ttl(&self) -> Option<Duration> {
        None
    }
}

#[tokio::test]
async fn the_embedded_coordinator_keeps_the_coordinator_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = EmbeddedCoordinator::open(dir.path()).await.expect("open");
    coordinator_contract(&Embedded { node, _dir: dir }).await;
}
