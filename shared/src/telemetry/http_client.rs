//! The HTTP client the OTLP exporters send with: the workspace's reqwest (with its rustls
//! TLS, so `https://` collectors work) in blocking mode. The SDK exports from its own
//! threads, which run no Tokio runtime, so an async client would have nothing to run on.

use std::time::Duration;

use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};

#[derive(Debug, Clone)]
pub struct BlockingHttp {
    client: reqwest::blocking::Client,
}

impl BlockingHttp {
    /// reqwest refuses to build a blocking client on a thread that runs async code (the
    /// binaries call `init` inside their runtime), so it is built on a thread of its own.
    pub fn new(timeout: Duration) -> Result<Self, String> {
        std::thread::spawn(move || {
            reqwest::blocking::Client::builder()
                .timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()
        })
        .join()
        .map_err(|_| "the thread building the OTLP HTTP client panicked".to_string())?
        .map(|client| BlockingHttp { client })
        .map_err(|e| format!("cannot build the OTLP HTTP client: {e}"))
    }
}

#[async_trait::async_trait]
impl HttpClient for BlockingHttp {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let answer = self
            .client
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body.to_vec())
            .send()?;
        let mut response = Response::builder().status(answer.status());
        if let Some(headers) = response.headers_mut() {
            *headers = answer.headers().clone();
        }
        Ok(response.body(answer.bytes()?)?)
    }
}

/// `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds), 10 s by default as the specification says.
pub fn export_timeout() -> Duration {
    std::env::var("OTEL_EXPORTER_OTLP_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(10), Duration::from_millis)
}
