use thiserror::Error;

/// Everything a client can get wrong in a tus request, by meaning.
///
/// The messages are short and safe to send back to the client as-is.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtocolError {
    #[error("missing Tus-Resumable header")]
    MissingTusResumable,
    #[error("unsupported tus version, this server speaks 1.0.0")]
    UnsupportedVersion,
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("invalid {0} header: expected a non-negative decimal integer")]
    InvalidNumber(&'static str),
    #[error("Upload-Defer-Length must be 1")]
    InvalidDeferLength,
    #[error("send exactly one of Upload-Length and Upload-Defer-Length")]
    LengthAndDeferLength,
    #[error("invalid Upload-Metadata: {0}")]
    InvalidMetadata(&'static str),
    #[error("Upload-Metadata is larger than {0} bytes")]
    MetadataTooLarge(usize),
    #[error("invalid Upload-Checksum header: expected '<algorithm> <base64 digest>'")]
    InvalidChecksum,
    #[error("unsupported checksum algorithm")]
    UnsupportedChecksumAlgorithm,
    #[error("invalid Upload-Concat header: {0}")]
    InvalidConcat(&'static str),
    #[error("invalid Range header")]
    InvalidRange,
    #[error("Content-Type must be application/offset+octet-stream")]
    WrongContentType,
    /// A concatenation the headers ask for cannot be made (the same words the engine uses
    /// for the concatenation rules it checks itself).
    #[error("invalid concatenation: {0}")]
    ConcatenationRefused(&'static str),
    /// `Upload-Draft-Interop-Version` names a version Tusk does not serve.
    #[error("unsupported Upload-Draft-Interop-Version: this server serves 3 to 9")]
    UnsupportedInteropVersion,
    /// A structured header of the draft that does not parse.
    #[error("invalid {0} header")]
    InvalidField(&'static str),
    /// An append of the draft (interop 6 on) without its media type.
    #[error("Content-Type must be application/partial-upload")]
    NotPartialUpload,
    /// Both a tus checksum and an RFC 9530 digest for one body.
    #[error("send one of Upload-Checksum and Content-Digest")]
    ChecksumAndDigest,
    /// HEAD or DELETE with an append's headers (interop 3 to 6 refuse them).
    #[error("Upload-Offset and the completeness header belong to appends only")]
    AppendHeadersOutOfPlace,
    /// `Upload-Length` and where a completing request ends disagree.
    #[error("Upload-Length does not match the length the request's completion implies")]
    InconsistentLength,
    /// A final upload is made of its partials only: it takes no bytes of its own.
    #[error("a final concatenated upload cannot be patched")]
    BodyOnFinal,
}
