//! The tus conformance suite against a shared upload directory + a Redis Cluster (three
//! masters, three replicas): three nodes behind nginx running deploy/nginx.conf, so every
//! request may land on any node, and uploads spread over every shard.
//!
//! redis-server (Debian's package, with redis-cli) and nginx must be installed
//! (tests/run.sh installs them); a missing one fails the test with the `apt-get install`
//! command.

tusk_tests::conformance_suite!(tusk_tests::cluster::FS_REDIS_CLUSTER_NGINX);
