//! Shared code of Tusk's end-to-end tests: the process harness and the conformance suite.

pub mod cluster;
pub mod conformance;
pub mod faultproxy;
pub mod harness;
pub mod rawpatch;
