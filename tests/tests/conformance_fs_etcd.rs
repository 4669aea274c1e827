//! The tus conformance suite against a shared upload directory + etcd: three nodes behind
//! nginx running deploy/nginx.conf, so every request may land on any node.
//!
//! etcd (Debian's etcd-server) and nginx must be installed (tests/run.sh installs them); a
//! missing one fails the test with the `apt-get install` command.

tusk_tests::conformance_suite!(tusk_tests::cluster::FS_ETCD_NGINX);
