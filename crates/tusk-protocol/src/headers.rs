//! Header names of tus 1.0.0 and its extensions, lower-case as HTTP/2 sends them.

pub const TUS_RESUMABLE: &str = "tus-resumable";
pub const TUS_VERSION: &str = "tus-version";
pub const TUS_EXTENSION: &str = "tus-extension";
pub const TUS_MAX_SIZE: &str = "tus-max-size";
pub const TUS_CHECKSUM_ALGORITHM: &str = "tus-checksum-algorithm";
pub const UPLOAD_OFFSET: &str = "upload-offset";
pub const UPLOAD_LENGTH: &str = "upload-length";
pub const UPLOAD_DEFER_LENGTH: &str = "upload-defer-length";
pub const UPLOAD_METADATA: &str = "upload-metadata";
pub const UPLOAD_CHECKSUM: &str = "upload-checksum";
pub const UPLOAD_CONCAT: &str = "upload-concat";
pub const UPLOAD_EXPIRES: &str = "upload-expires";
pub const X_HTTP_METHOD_OVERRIDE: &str = "x-http-method-override";

// Plain HTTP headers whose values tus rules depend on.
pub const CONTENT_TYPE: &str = "content-type";
pub const CONTENT_LENGTH: &str = "content-length";
pub const TRANSFER_ENCODING: &str = "transfer-encoding";

/// Request headers a browser must be allowed to send (CORS preflight).
pub const CORS_ALLOW_HEADERS: &str = "Authorization, Content-Type, Location, Tus-Extension, \
Tus-Max-Size, Tus-Resumable, Tus-Version, Upload-Concat, Upload-Defer-Length, Upload-Length, \
Upload-Metadata, Upload-Offset, Upload-Checksum, X-HTTP-Method-Override, X-Requested-With, \
X-Request-ID, Upload-Draft-Interop-Version, Upload-Complete, Upload-Incomplete, Content-Digest, \
Repr-Digest, Want-Repr-Digest";

/// Response headers a browser client must be allowed to read.
pub const CORS_EXPOSE_HEADERS: &str = "Location, Tus-Checksum-Algorithm, Tus-Extension, \
Tus-Max-Size, Tus-Resumable, Tus-Version, Upload-Concat, Upload-Defer-Length, Upload-Expires, \
Upload-Length, Upload-Metadata, Upload-Offset, Upload-Draft-Interop-Version, Upload-Complete, \
Upload-Incomplete, Upload-Limit, Repr-Digest";
