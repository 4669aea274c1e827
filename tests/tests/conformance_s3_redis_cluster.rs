//! The tus conformance suite against one S3 bucket (moto's server) + a Redis Cluster (three
//! masters, three replicas): three nodes behind nginx running deploy/nginx.conf.
//!
//! moto, redis-server (with redis-cli) and nginx must be installed (tests/run.sh installs
//! them); a missing one fails the test with the install command.

tusk_tests::conformance_suite!(tusk_tests::cluster::S3_REDIS_CLUSTER_NGINX);
