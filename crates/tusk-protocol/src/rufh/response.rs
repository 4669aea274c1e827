//! What the draft's responses carry beyond tus's headers: `Upload-Limit`, and the problem
//! documents (RFC 9457) of its error types.

use super::InteropVersion;

/// The limits a server announces in `Upload-Limit`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadLimits {
    /// Largest upload, in bytes.
    pub max_size: Option<u64>,
    /// Seconds the upload (or a new one) stays resumable without an append.
    pub max_age: Option<u64>,
}

/// `Upload-Limit` as `version` spells it; `None` before version 6, which has no such header.
/// Version 6 names the lifetime `expires`, later versions `max-age`; with nothing to limit,
/// `min-size=0` says so (the drafts ask OPTIONS for a value even then).
pub fn render_limits(version: InteropVersion, limits: UploadLimits) -> Option<String> {
    if !version.has_limits() {
        return None;
    }
    let lifetime = if version.number() == 6 {
        "expires"
    } else {
        "max-age"
    };
    let mut members = Vec::new();
    if let Some(max) = limits.max_size {
        members.push(format!("max-size={max}"));
    }
    if let Some(age) = limits.max_age {
        members.push(format!("{lifetime}={age}"));
    }
    if members.is_empty() {
        members.push("min-size=0".to_string());
    }
    Some(members.join(", "))
}

/// The draft's problem types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// An append at another offset than the upload's.
    MismatchingOffset { expected: u64, provided: u64 },
    /// An append to an upload that has all its bytes.
    CompletedUpload,
    /// Lengths that disagree (headers, or a request that ends elsewhere than the length).
    InconsistentLength,
}

impl Problem {
    fn slug(self) -> &'static str {
        match self {
            Self::MismatchingOffset { .. } => "mismatching-upload-offset",
            Self::CompletedUpload => "completed-upload",
            Self::InconsistentLength => "inconsistent-upload-length",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::MismatchingOffset { .. } => {
                "offset from request does not match offset of resource"
            }
            Self::CompletedUpload => "upload is already completed",
            Self::InconsistentLength => "inconsistent length values for upload",
        }
    }

    /// Whether `version` defines this type.
    pub fn exists_in(self, version: InteropVersion) -> bool {
        match self {
            Self::MismatchingOffset { .. } => version.has_problem_types(),
            Self::CompletedUpload => version.has_completed_upload_problem(),
            Self::InconsistentLength => version.has_inconsistent_length_problem(),
        }
    }

    /// The problem document, `detail` being the server's own sentence (plain text it chose,
    /// escaped here all the same).
    pub fn render(self, detail: &str) -> String {
        let mut document = format!(
            "{{\"type\":\"https://iana.org/assignments/http-problem-types#{}\",\"title\":\"{}\",\"detail\":\"{}\"",
            self.slug(),
            self.title(),
            json_escaped(detail)
        );
        if let Self::MismatchingOffset { expected, provided } = self {
            document.push_str(&format!(
                ",\"expected-offset\":{expected},\"provided-offset\":{provided}"
            ));
        }
        document.push('}');
        document
    }
}

fn json_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: u8) -> InteropVersion {
        InteropVersion::parse(n.to_string().as_bytes()).expect("served")
    }

    #[test]
    fn limits_follow_the_version() {
        let limits = UploadLimits {
            max_size: Some(1000),
            max_age: Some(60),
        };
        assert_eq!(render_limits(v(5), limits), None);
        assert_eq!(
            render_limits(v(6), limits).as_deref(),
            Some("max-size=1000, expires=60")
        );
        assert_eq!(
            render_limits(v(9), limits).as_deref(),
            Some("max-size=1000, max-age=60")
        );
        assert_eq!(
            render_limits(v(7), UploadLimits::default()).as_deref(),
            Some("min-size=0")
        );
    }

    #[test]
    fn problems_are_json_with_their_members() {
        let doc = Problem::MismatchingOffset {
            expected: 5,
            provided: 7,
        }
        .render("say \"5\"\n");
        assert_eq!(
            doc,
            "{\"type\":\"https://iana.org/assignments/http-problem-types#mismatching-upload-offset\",\
\"title\":\"offset from request does not match offset of resource\",\
\"detail\":\"say \\\"5\\\"\\u000a\",\"expected-offset\":5,\"provided-offset\":7}"
        );
        assert!(Problem::CompletedUpload.exists_in(v(8)));
        assert!(!Problem::CompletedUpload.exists_in(v(9)));
        assert!(!Problem::InconsistentLength.exists_in(v(6)));
    }
}
