//! A client of the IETF draft for the cases: requests carrying one interop version, and the
//! version's spelling of completeness, statuses and limits, written from the drafts' texts
//! (docs/rufh.md), independently of the server's code.

use anyhow::{ensure, Context, Result};
use reqwest::{Method, RequestBuilder, Response};

use crate::conformance::util::{header, header_u64};
use crate::conformance::Ctx;

/// Every interop version the server serves.
pub const VERSIONS: [u8; 7] = [3, 4, 5, 6, 7, 8, 9];

/// The media type of appends from version 6 on.
pub const PARTIAL_UPLOAD: &str = "application/partial-upload";

/// The draft's problem type URIs.
pub const MISMATCHING_OFFSET: &str =
    "https://iana.org/assignments/http-problem-types#mismatching-upload-offset";
pub const COMPLETED_UPLOAD: &str =
    "https://iana.org/assignments/http-problem-types#completed-upload";
pub const INCONSISTENT_LENGTH: &str =
    "https://iana.org/assignments/http-problem-types#inconsistent-upload-length";

/// One version's client over a case's context.
#[derive(Clone)]
pub struct Draft {
    pub ctx: Ctx,
    pub version: u8,
}

impl Draft {
    pub fn new(ctx: &Ctx, version: u8) -> Self {
        Self {
            ctx: ctx.clone(),
            version,
        }
    }

    /// A request naming this version (and no tus header).
    pub fn request(&self, method: Method, url: &str) -> RequestBuilder {
        self.ctx
            .plain(method, url)
            .header("Upload-Draft-Interop-Version", self.version.to_string())
    }

    /// The completeness header: `Upload-Incomplete` in version 3, `Upload-Complete` later.
    pub fn completeness_header(&self) -> &'static str {
        if self.version == 3 {
            "Upload-Incomplete"
        } else {
            "Upload-Complete"
        }
    }

    /// The completeness header's value for "complete" or not.
    pub fn completeness(&self, complete: bool) -> &'static str {
        if complete != (self.version == 3) {
            "?1"
        } else {
            "?0"
        }
    }

    /// A creation on the collection carrying `body`, not yet sent.
    pub fn creation(&self, body: &[u8], complete: bool) -> RequestBuilder {
        self.request(Method::POST, &self.ctx.endpoint)
            .header(self.completeness_header(), self.completeness(complete))
            .body(body.to_vec())
    }

    /// Creates an upload carrying `body`; asserts 201 with its Location and returns it.
    pub async fn create(&self, body: &[u8], complete: bool) -> Result<String> {
        let resp = self
            .ctx
            .send(self.creation(body, complete), "creation")
            .await?;
        let resp = self
            .expect(resp, 201, "creation answers 201 Created")
            .await?;
        self.ensure_state(&resp, body.len() as u64, complete, "creation's answer")?;
        let location = header(&resp, "Location").context("creation: no Location")?;
        ensure!(
            location.starts_with("http://"),
            "creation: Location {location:?} is not absolute"
        );
        Ok(location)
    }

    /// An append of `body` at `offset`, not yet sent.
    pub fn append(&self, url: &str, offset: u64, body: &[u8], complete: bool) -> RequestBuilder {
        let mut request = self
            .request(Method::PATCH, url)
            .header("Upload-Offset", offset.to_string())
            .header(self.completeness_header(), self.completeness(complete))
            .body(body.to_vec());
        if self.version >= 6 {
            request = request.header("Content-Type", PARTIAL_UPLOAD);
        }
        request
    }

    /// Appends that must succeed: 201 (versions 3 to 6, upload still incomplete) or 204,
    /// with the new offset and completeness.
    pub async fn append_ok(
        &self,
        url: &str,
        offset: u64,
        body: &[u8],
        complete: bool,
    ) -> Result<()> {
        let resp = self
            .ctx
            .send(self.append(url, offset, body, complete), "append")
            .await?;
        let want = if !complete && self.version <= 6 {
            201
        } else {
            204
        };
        let resp = self
            .expect(
                resp,
                want,
                "a successful append answers 201 (3 to 6, incomplete) or 204",
            )
            .await?;
        self.ensure_state(
            &resp,
            offset + body.len() as u64,
            complete,
            "append's answer",
        )
    }

    /// HEAD (offset retrieval) that must answer 204; checks offset and completeness.
    pub async fn head_ok(&self, url: &str, offset: u64, complete: bool) -> Result<Response> {
        let resp = self
            .ctx
            .send(self.request(Method::HEAD, url), "offset retrieval")
            .await?;
        let resp = self
            .expect(resp, 204, "offset retrieval answers 204")
            .await?;
        self.ensure_state(&resp, offset, complete, "offset retrieval")?;
        ensure!(
            header(&resp, "Cache-Control").as_deref() == Some("no-store"),
            "v{}: offset retrieval carries Cache-Control: no-store",
            self.version
        );
        Ok(resp)
    }

    /// Asserts `Upload-Offset` and the completeness header of an answer.
    pub fn ensure_state(
        &self,
        resp: &Response,
        offset: u64,
        complete: bool,
        what: &str,
    ) -> Result<()> {
        let v = self.version;
        let got = header_u64(
            resp,
            "Upload-Offset",
            &format!("v{v}: {what} carries Upload-Offset"),
        )?;
        ensure!(
            got == offset,
            "v{v}: {what}: Upload-Offset {got}, expected {offset}"
        );
        let name = self.completeness_header();
        let got = header(resp, name);
        ensure!(
            got.as_deref() == Some(self.completeness(complete)),
            "v{v}: {what}: {name} {got:?}, expected {:?} (complete: {complete})",
            self.completeness(complete)
        );
        Ok(())
    }

    /// Asserts the status and the echoed interop version; shows the body on a wrong status.
    pub async fn expect(&self, resp: Response, want: u16, rule: &str) -> Result<Response> {
        let v = self.version;
        let status = resp.status().as_u16();
        if status != want {
            let body = resp.text().await.unwrap_or_default();
            anyhow::bail!("v{v}: {rule}: expected {want}, got {status}: {body}");
        }
        let echoed = header(&resp, "Upload-Draft-Interop-Version");
        ensure!(
            echoed.as_deref() == Some(v.to_string().as_str()),
            "v{v}: {rule}: the answer names interop version {echoed:?}"
        );
        Ok(resp)
    }

    /// Asserts an error answer: its status, and from `since` on the problem document of
    /// `problem_type` (before, no problem document).
    pub async fn expect_problem(
        &self,
        resp: Response,
        status: u16,
        problem_type: &str,
        since: u8,
        rule: &str,
    ) -> Result<serde_json::Value> {
        let v = self.version;
        let resp = self.expect(resp, status, rule).await?;
        let content_type = header(&resp, "Content-Type").unwrap_or_default();
        let body = resp.text().await.context("reading the error's body")?;
        if v < since {
            ensure!(
                content_type != "application/problem+json",
                "v{v}: {rule}: no problem types before version {since}, got {body}"
            );
            return Ok(serde_json::Value::Null);
        }
        ensure!(
            content_type == "application/problem+json",
            "v{v}: {rule}: Content-Type {content_type:?}, expected application/problem+json"
        );
        let document: serde_json::Value =
            serde_json::from_str(&body).with_context(|| format!("v{v}: {rule}: {body}"))?;
        ensure!(
            document["type"] == problem_type,
            "v{v}: {rule}: problem type {}, expected {problem_type}",
            document["type"]
        );
        Ok(document)
    }
}
