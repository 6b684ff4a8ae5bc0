//! One warn-level log line for every failed request: a tower layer around the whole
//! gRPC router, so refusals by the authorization interceptor, the service's errors and
//! unknown methods are all seen in one place. It logs the method, the gRPC code and the
//! message the client gets (never request fields, environment values or file contents).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::codegen::http;
use tonic::Code;
use tower::{Layer, Service};

/// Adds `LogFailures` around a service.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogFailuresLayer;

impl<S> Layer<S> for LogFailuresLayer {
    type Service = LogFailures<S>;

    fn layer(&self, inner: S) -> LogFailures<S> {
        LogFailures { inner }
    }
}

/// Logs each response whose `grpc-status` is not OK. A failure sent in the trailers of
/// a stream that already started (attach) is not seen here: the stream itself ends it.
#[derive(Debug, Clone)]
pub struct LogFailures<S> {
    inner: S,
}

impl<S, B, RB> Service<http::Request<B>> for LogFailures<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().to_string();
        let answer = self.inner.call(req);
        Box::pin(async move {
            let response = answer.await?;
            if let Some((code, message)) = failure(response.headers()) {
                tracing::warn!(method, code = ?code, "request failed: {message}");
            }
            Ok(response)
        })
    }
}

/// The gRPC code and message of a failed response, from its headers.
pub fn failure(headers: &http::HeaderMap) -> Option<(Code, String)> {
    let status = headers.get("grpc-status")?.to_str().ok()?;
    let code = Code::from_i32(status.parse().ok()?);
    if code == Code::Ok {
        return None;
    }
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    Some((code, message))
}

/// Undoes gRPC's percent-encoding of `grpc-message` (invalid escapes are kept).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_statuses_are_found_with_their_message() {
        let status = tonic::Status::not_found("no such job: x (see `cedana ps`)");
        let response = status.into_http();
        let (code, message) = failure(response.headers()).expect("a failure");
        assert_eq!(code, Code::NotFound);
        assert_eq!(message, "no such job: x (see `cedana ps`)");
    }

    #[test]
    fn ok_and_missing_statuses_are_not_failures() {
        let mut headers = http::HeaderMap::new();
        assert!(failure(&headers).is_none());
        headers.insert("grpc-status", http::HeaderValue::from_static("0"));
        assert!(failure(&headers).is_none());
    }

    #[test]
    fn percent_decoding_keeps_bad_escapes() {
        assert_eq!(percent_decode("a%20b%zz%"), "a b%zz%");
    }
}
