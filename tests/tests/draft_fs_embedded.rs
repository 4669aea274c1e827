//! The IETF draft's conformance suite (interop versions 3 to 9) on one node: local disk and
//! the embedded coordinator.

tusk_tests::draft_suite!(tusk_tests::harness::FsEmbedded);
