//! Shared code of Tusk's end-to-end tests: the process harness, deployments made of a storage
//! half and a coordinator half, the conformance suite, the cluster and its services (Redis,
//! S3 on moto, load balancers), and the fault scenarios.

pub mod balancer;
pub mod browser;
pub mod cluster;
pub mod conformance;
pub mod deploy;
pub mod etcd;
pub mod faultproxy;
pub mod faults;
pub mod gcs;
pub mod harness;
pub mod process;
pub mod rawpatch;
pub mod redis;
pub mod redis_cluster;
pub mod rufh;
pub mod s3;
pub mod s3proxy;
pub mod tls;
pub mod tusd_cli;
pub mod uploaded;
