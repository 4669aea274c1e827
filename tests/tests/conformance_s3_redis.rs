//! The tus conformance suite against S3 storage + Redis: three nodes sharing one bucket on
//! moto's S3 server (started by the harness, a fresh bucket and prefix per case) and one
//! Redis, behind nginx running deploy/nginx.conf. Every request may land on any node.
//!
//! On S3 a GET of an upload that is not finished answers 409 (an unfinished multipart upload
//! cannot be read); the cases that GET an unfinished upload expect that here and still check
//! the exact bytes once the upload is finished.
//!
//! moto must be installed (`pip install 'moto[server]==5.1.22'`), and redis-server and nginx
//! (tests/run.sh installs them); a missing one fails the test with the install command.

tusk_tests::conformance_suite!(tusk_tests::cluster::S3_REDIS_NGINX);
