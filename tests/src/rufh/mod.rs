//! The conformance suite of the IETF draft "Resumable Uploads for HTTP", generic over the
//! deployment like the tus suite ([`crate::conformance`]): each case runs every interop
//! version (3 to 9) over real HTTP against one running deployment.
//! [`draft_suite!`](crate::draft_suite) expands to one `#[tokio::test]` per case.

mod cases;
pub mod draft;
mod wire;

/// All cases of the draft's suite, by the name the generated test carries.
pub mod draft_cases {
    pub use super::cases::*;
    pub use super::wire::*;
}

/// Expands to one `#[tokio::test]` per case of the draft's suite against `$deployment`,
/// each on a fresh deployment; entries are `case [extra server args]`.
#[macro_export]
macro_rules! draft_suite {
    ($deployment:expr) => {
        $crate::draft_suite!(@cases $deployment;
            draft_creation_without_content [],
            draft_creation_with_content [],
            draft_append_in_pieces [],
            draft_offset_mismatch [],
            draft_completed_upload [],
            draft_inconsistent_length [],
            draft_limits ["--max-size", "1000", "--expire-after", "1h"],
            draft_cancellation [],
            draft_bad_requests [],
            draft_and_tus_share_uploads [],
            draft_digests [],
            draft_interim_on_the_wire ["--interim-responses"],
            draft_interim_off_by_default [],
            draft_interrupted_creation_resumes ["--interim-responses"],
        );
    };
    (@cases $deployment:expr; $($name:ident [$($arg:literal),*]),* $(,)?) => {
        $(
            #[::tokio::test]
            async fn $name() -> ::anyhow::Result<()> {
                $crate::conformance::run(
                    &$deployment,
                    &[$($arg),*],
                    stringify!($name),
                    $crate::rufh::draft_cases::$name,
                )
                .await
            }
        )*
    };
}
