//! The tus conformance suite against S3 storage + etcd: three nodes sharing one bucket on
//! moto's S3 server and one etcd, behind nginx running deploy/nginx.conf. Every request may
//! land on any node; on S3 a GET of an unfinished upload answers 409 (see
//! conformance_s3_redis.rs).
//!
//! moto must be installed (`pip install 'moto[server]==5.1.22'`), and etcd-server and nginx
//! (tests/run.sh installs them); a missing one fails the test with the install command.

tusk_tests::conformance_suite!(tusk_tests::cluster::S3_ETCD_NGINX);
