//! The tus conformance suite against local disk + the embedded coordinator: one node.

tusk_tests::conformance_suite!(tusk_tests::harness::FsEmbedded);
