//! The tus conformance suite against S3 storage + the embedded coordinator: one node on a
//! bucket of moto's S3 server (started by the harness, a fresh bucket and prefix per case),
//! its records in its own write-ahead log.
//!
//! On S3 a GET of an upload that is not finished answers 409 (an unfinished multipart upload
//! cannot be read); the cases that GET an unfinished upload expect that here and still check
//! the exact bytes once the upload is finished.
//!
//! moto must be installed (`pip install 'moto[server]==5.1.22'`, tests/run.sh does it); a
//! missing one fails the test with that command.

tusk_tests::conformance_suite!(tusk_tests::deploy::S3_EMBEDDED);
