//! The IETF draft's conformance suite on a cluster: three nodes on shared disk and Redis
//! behind HAProxy, which relays the 104 interim response as an interim response (nginx does
//! not: docs/rufh.md), so the cases with `--interim-responses` run through it too.

tusk_tests::draft_suite!(tusk_tests::cluster::FS_REDIS_HAPROXY);
