//! Shared code of Tusk's end-to-end tests: the process harness, the conformance suite, the
//! cluster and S3 services, and the fault scenarios.

pub mod cluster;
pub mod conformance;
pub mod faultproxy;
pub mod faults;
pub mod harness;
pub mod rawpatch;
pub mod s3;
pub mod s3proxy;
