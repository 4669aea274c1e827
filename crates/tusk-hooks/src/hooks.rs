use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::Uri;
use tusk_core::{
    Access, CreateChanges, HookEvent, HookRefusal, Hooks, Observer, RequestInfo, UploadRecord,
};

use crate::access_cache::AccessCache;
use crate::grpc::GrpcTarget;
use crate::headers::HeaderPolicy;
use crate::payload;
use crate::progress::ProgressLimiter;
use crate::queue::{self, Job, Queue};
use crate::sender::{Sender, Target};
use crate::settings::{self, HookSettings};
use crate::tusd_payload;

/// Why [`HttpHooks::new`] refused its settings.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("hooks.endpoint, hooks.dir and hooks.grpc are exclusive: give one (an HTTP endpoint, a directory of executables or a gRPC server)")]
    TwoTargets,
    #[error("hooks.dir {0:?} is not a directory")]
    NotADirectory(String),
    #[error("hook endpoint {endpoint:?} is not a usable URL: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    #[error("unknown hook event {0:?} (known: pre-create, post-create, post-receive, pre-finish, post-finish, post-terminate, pre-access)")]
    UnknownEvent(String),
    #[error("hooks are enabled but no tokio runtime is running to deliver them")]
    NoRuntime,
    #[error("{0:?} in hooks.credential_headers or hooks.forward_headers is not a header name")]
    InvalidHeaderName(String),
    #[error(transparent)]
    Tls(#[from] tusk_tls::TlsError),
}

/// Hooks POSTed as JSON to one HTTP endpoint, run as the executables of a directory, or
/// called on a gRPC server.
/// See the crate documentation.
pub struct HttpHooks {
    events: HashSet<HookEvent>,
    sender: Arc<Sender>,
    queue: Arc<Queue>,
    progress: ProgressLimiter,
    access_cache: AccessCache,
    headers: HeaderPolicy,
}

impl HttpHooks {
    /// Checks `settings` and, unless hooks are disabled (neither endpoint nor directory, or
    /// no events),
    /// spawns the task that delivers notifications: it must then be called inside a tokio
    /// runtime, which the task lives on ([`HookError::NoRuntime`] otherwise).
    pub fn new(
        settings: HookSettings,
        observer: Arc<dyn Observer>,
    ) -> Result<Arc<Self>, HookError> {
        let headers = HeaderPolicy::new(&settings)?;
        let endpoint = settings.endpoint.trim();
        let mut events = HashSet::new();
        for name in &settings.events {
            let event = settings::event_by_name(name)
                .ok_or_else(|| HookError::UnknownEvent(name.clone()))?;
            events.insert(event);
        }
        let dir = settings.dir.clone().filter(|d| !d.as_os_str().is_empty());
        let grpc = Some(settings.grpc.trim()).filter(|g| !g.is_empty());
        let targets = [!endpoint.is_empty(), dir.is_some(), grpc.is_some()];
        if targets.iter().filter(|given| **given).count() > 1 {
            return Err(HookError::TwoTargets);
        }
        let sender = if let Some(dir) = dir {
            if !dir.is_dir() {
                return Err(HookError::NotADirectory(dir.display().to_string()));
            }
            Sender::new(Target::Dir(dir), &settings, observer.clone())
        } else if let Some(grpc) = grpc {
            Sender::new(
                Target::Grpc(GrpcTarget::new(grpc)?),
                &settings,
                observer.clone(),
            )
        } else if !endpoint.is_empty() {
            Sender::http(parse_endpoint(endpoint)?, &settings, observer.clone())?
        } else {
            events.clear();
            Sender::http(Uri::default(), &settings, observer.clone())?
        };
        let sender = Arc::new(sender);
        let queue = Arc::new(Queue::new(settings.queue, settings.queue_bytes, observer));
        if events.iter().any(|e| !is_blocking(*e)) {
            let runtime =
                tokio::runtime::Handle::try_current().map_err(|_| HookError::NoRuntime)?;
            runtime.spawn(queue::dispatch(queue.clone(), sender.clone()));
        }
        Ok(Arc::new(Self {
            events,
            sender,
            queue,
            progress: ProgressLimiter::new(settings.post_receive_interval),
            access_cache: AccessCache::new(settings.access_cache_ttl),
            headers,
        }))
    }

    async fn blocking(
        &self,
        event: HookEvent,
        upload: &UploadRecord,
        access: Option<Access>,
        request: &RequestInfo,
    ) -> Result<CreateChanges, HookRefusal> {
        if !self.events.contains(&event) {
            return Ok(CreateChanges::default());
        }
        let key = payload::idempotency_key(event, upload);
        let body = self.body(event, &key, upload, access, Some(request));
        self.sender.call(event, &key, body).await
    }

    /// The payload of `event`, carrying only the headers the operator lets through.
    fn body(
        &self,
        event: HookEvent,
        key: &str,
        upload: &UploadRecord,
        access: Option<Access>,
        request: Option<&RequestInfo>,
    ) -> Bytes {
        let request = request.map(|r| self.headers.forwarded(r));
        if self.sender.speaks_tusd() {
            return Bytes::from(tusd_payload::body(event, upload, access, request.as_ref()));
        }
        Bytes::from(payload::body(event, key, upload, access, request.as_ref()))
    }
}

impl Drop for HttpHooks {
    fn drop(&mut self) {
        self.queue.close();
    }
}

#[async_trait]
impl Hooks for HttpHooks {
    fn enabled(&self, event: HookEvent) -> bool {
        self.events.contains(&event)
    }

    async fn pre_create(
        &self,
        upload: &UploadRecord,
        request: &RequestInfo,
    ) -> Result<CreateChanges, HookRefusal> {
        self.blocking(HookEvent::PreCreate, upload, None, request)
            .await
    }

    async fn pre_access(
        &self,
        upload: &UploadRecord,
        access: Access,
        request: &RequestInfo,
    ) -> Result<(), HookRefusal> {
        if !self.events.contains(&HookEvent::PreAccess) {
            return Ok(());
        }
        let credentials = self.headers.credentials(request);
        if self
            .access_cache
            .allows(&upload.id, access, credentials.as_deref())
        {
            return Ok(());
        }
        self.blocking(HookEvent::PreAccess, upload, Some(access), request)
            .await?;
        self.access_cache.remember(&upload.id, access, credentials);
        Ok(())
    }

    async fn pre_finish(
        &self,
        upload: &UploadRecord,
        request: &RequestInfo,
    ) -> Result<(), HookRefusal> {
        self.blocking(HookEvent::PreFinish, upload, None, request)
            .await
            .map(|_| ())
    }

    fn notify(&self, event: HookEvent, upload: &UploadRecord, request: Option<&RequestInfo>) {
        self.forget_when_done(event, upload);
        if is_blocking(event) || !self.events.contains(&event) {
            return;
        }
        if event == HookEvent::PostReceive && !self.progress.allow(&upload.id) {
            return;
        }
        let key = payload::idempotency_key(event, upload);
        let body = self.body(event, &key, upload, None, request);
        self.queue.push(Job { event, key, body });
    }

    async fn deliver(
        &self,
        event: HookEvent,
        upload: &UploadRecord,
        request: Option<&RequestInfo>,
    ) -> bool {
        self.forget_when_done(event, upload);
        if is_blocking(event) || !self.events.contains(&event) {
            // Nothing to send (the configuration changed since the notice was owed).
            return true;
        }
        let key = payload::idempotency_key(event, upload);
        let body = self.body(event, &key, upload, None, request);
        self.sender.deliver(Job { event, key, body }).await
    }

    fn delivery_time(&self) -> Duration {
        self.sender.longest_delivery()
    }
}

impl HttpHooks {
    /// An upload that finished or went needs no progress limit or access cache any more.
    fn forget_when_done(&self, event: HookEvent, upload: &UploadRecord) {
        if matches!(event, HookEvent::PostFinish | HookEvent::PostTerminate) {
            self.progress.forget(&upload.id);
            self.access_cache.forget(&upload.id);
        }
    }
}

fn is_blocking(event: HookEvent) -> bool {
    matches!(
        event,
        HookEvent::PreCreate | HookEvent::PreAccess | HookEvent::PreFinish
    )
}

fn parse_endpoint(endpoint: &str) -> Result<Uri, HookError> {
    let invalid = |reason: String| HookError::InvalidEndpoint {
        endpoint: endpoint.to_string(),
        reason,
    };
    let uri: Uri = endpoint.parse().map_err(|e| invalid(format!("{e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(invalid(format!(
                "scheme {other:?} is not supported, use http or https"
            )))
        }
        None => {
            return Err(invalid(
                "no scheme, expected http(s)://host[:port]/path".into(),
            ))
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("no host".into()));
    }
    Ok(uri)
}
