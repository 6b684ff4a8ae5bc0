//! The S3 client side of the S3 store: one `object_store` client per bucket, built from
//! the AWS environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`), the AWS profile files under it
//! (`profile.rs`: `AWS_PROFILE`, `~/.aws/credentials`, `~/.aws/config`) and the `s3.*`
//! config keys;
//! the runtime its requests run on; and what its failures mean to a user. Credentials
//! are handed to the client only: nothing here formats them.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::{BackoffConfig, ClientOptions, RetryConfig};

use super::profile::{self, Profile};
use crate::store::StoreError;

/// Worker threads of the S3 runtime: part uploads and downloads are I/O bound.
const S3_WORKERS: usize = 4;
/// object_store's region when none is set.
const DEFAULT_REGION: &str = "us-east-1";
/// A server that does not answer a connection in this long is treated as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One request (a part of at most [`super::PART_BYTES`]) taking longer than this fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Retries of a failed request (a part is re-sent whole, so a retry never corrupts it).
const MAX_RETRIES: usize = 3;
/// Give up retrying a request after this long: a dump holds its process meanwhile.
const RETRY_TIMEOUT: Duration = Duration::from_secs(15);

/// Where and how to reach the S3 server, besides the `AWS_*` environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    /// Endpoint URL (`s3.endpoint`), over `AWS_ENDPOINT_URL`.
    pub endpoint: Option<String>,
    /// Region (`s3.region`), over `AWS_REGION`.
    pub region: Option<String>,
    /// Where the journal of open multipart uploads lives (beside the daemon's database),
    /// so that the next start aborts those a crash left; the temp dir without one.
    pub journal_dir: Option<std::path::PathBuf>,
}

/// Runs S3 requests: our own runtime, so that blocking store calls work from any thread
/// (a daemon's blocking pool, the CLI's `--no-server` path, a test).
fn runtime() -> Result<&'static tokio::runtime::Runtime, StoreError> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(S3_WORKERS)
            .thread_name("cedana-s3")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| StoreError::Io {
        location: "s3".into(),
        context: "start the S3 client's runtime".into(),
        source: std::io::Error::other(e.clone()),
    })
}

/// Runs `fut` on the S3 runtime and waits for it from this (non-async) thread.
pub(super) fn block_on<T, F>(fut: F) -> Result<T, StoreError>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handle = runtime()?.spawn(fut);
    futures::executor::block_on(handle).map_err(|e| StoreError::Io {
        location: "s3".into(),
        context: "an S3 request task failed".into(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// Spawns `fut` on the S3 runtime (part uploads), when it runs.
pub(super) fn spawn<F>(fut: F) -> Result<tokio::task::JoinHandle<F::Output>, StoreError>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    Ok(runtime()?.spawn(fut))
}

/// S3 clients by bucket, built on first use.
#[derive(Debug, Default)]
pub(super) struct Clients {
    settings: S3Settings,
    by_bucket: Mutex<BTreeMap<String, Arc<AmazonS3>>>,
    /// The AWS profile, read once (an error says which file or profile is wrong).
    profile: OnceLock<Result<Option<Profile>, String>>,
}

/// A variable of this process's environment, if set and not empty.
fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

impl Clients {
    pub(super) fn new(settings: S3Settings) -> Self {
        Self {
            settings,
            by_bucket: Mutex::default(),
            profile: OnceLock::new(),
        }
    }

    fn profile(&self) -> Result<Option<&Profile>, String> {
        self.profile
            .get_or_init(|| profile::load(&env))
            .as_ref()
            .map(Option::as_ref)
            .map_err(Clone::clone)
    }

    /// The endpoint requests go to, for messages (never a credential).
    pub(super) fn endpoint(&self) -> String {
        self.settings
            .endpoint
            .clone()
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .or_else(|| env("AWS_ENDPOINT"))
            .or_else(|| self.profile().ok().flatten()?.endpoint_url.clone())
            .unwrap_or_else(|| "AWS S3".into())
    }

    /// The builder from the environment, with the profile filling what it leaves unset:
    /// its key pair only when the environment has none, its region and endpoint only when
    /// neither the config keys nor the environment give them.
    fn builder(&self, bucket: &str) -> Result<AmazonS3Builder, String> {
        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(p) = self.profile()? {
            if env("AWS_ACCESS_KEY_ID").is_none() {
                if let (Some(id), Some(secret)) = (&p.access_key_id, &p.secret_access_key) {
                    b = b.with_access_key_id(id).with_secret_access_key(secret);
                    if let Some(t) = &p.session_token {
                        b = b.with_token(t);
                    }
                }
            }
            if env("AWS_REGION")
                .or_else(|| env("AWS_DEFAULT_REGION"))
                .is_none()
            {
                if let Some(r) = &p.region {
                    b = b.with_region(r);
                }
            }
            if env("AWS_ENDPOINT_URL")
                .or_else(|| env("AWS_ENDPOINT"))
                .is_none()
            {
                if let Some(e) = &p.endpoint_url {
                    b = b.with_endpoint(e);
                }
            }
        }
        Ok(b)
    }

    /// The client of `bucket`.
    pub(super) fn get(&self, bucket: &str) -> Result<Arc<AmazonS3>, StoreError> {
        let mut by_bucket = self.by_bucket.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = by_bucket.get(bucket) {
            return Ok(Arc::clone(c));
        }
        let b = self.configured(bucket)?;
        let client = Arc::new(b.build().map_err(|e| StoreError::Remote {
            location: format!("s3://{bucket}"),
            context: "configure the S3 client".into(),
            problem: format!(
                "{e}; set AWS_REGION (or s3.region), AWS_ENDPOINT_URL (or s3.endpoint) and \
                 AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE with \
                 ~/.aws/credentials)"
            ),
        })?);
        by_bucket.insert(bucket.to_string(), Arc::clone(&client));
        Ok(client)
    }

    /// Where `bucket`'s requests go (path-style, as its client sends them), for the
    /// requests `object_store` has no call for (`uploads.rs`).
    pub(super) fn addressing(&self, bucket: &str) -> Result<Addressing, StoreError> {
        let b = self.configured(bucket)?;
        let region = b
            .get_config_value(&AmazonS3ConfigKey::Region)
            .unwrap_or_else(|| DEFAULT_REGION.into());
        let endpoint = b
            .get_config_value(&AmazonS3ConfigKey::Endpoint)
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        Ok(Addressing {
            bucket_url: format!("{}/{bucket}", endpoint.trim_end_matches('/')),
            region,
            options: client_options(endpoint.starts_with("http://")),
        })
    }

    /// The builder of `bucket`'s client, fully configured.
    fn configured(&self, bucket: &str) -> Result<AmazonS3Builder, StoreError> {
        let mut b = self.builder(bucket).map_err(|problem| StoreError::Remote {
            location: format!("s3://{bucket}"),
            context: "read the AWS profile".into(),
            problem,
        })?;
        if let Some(e) = &self.settings.endpoint {
            b = b.with_endpoint(e);
        }
        if let Some(r) = &self.settings.region {
            b = b.with_region(r);
        }
        let endpoint = self.endpoint();
        // A local test server or a private gateway speaks plain HTTP: the endpoint the
        // user chose says so; nothing else is ever sent unencrypted.
        let plain_http = endpoint.starts_with("http://");
        Ok(b.with_allow_http(plain_http)
            .with_virtual_hosted_style_request(false)
            .with_client_options(client_options(plain_http))
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(2),
                    base: 2.0,
                },
                max_retries: MAX_RETRIES,
                retry_timeout: RETRY_TIMEOUT,
            }))
    }
}

/// The HTTP client's options: plain HTTP only where the endpoint says so.
fn client_options(plain_http: bool) -> ClientOptions {
    ClientOptions::new()
        .with_allow_http(plain_http)
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT)
}

/// Where a bucket's requests go, and how to connect there.
pub(super) struct Addressing {
    /// `ENDPOINT/BUCKET`, no trailing `/`.
    pub bucket_url: String,
    /// The region requests are signed for.
    pub region: String,
    /// The HTTP client's options.
    pub options: ClientOptions,
}

/// What a failed request means and what to do about it, from the server's answer.
pub(super) fn explain(e: &object_store::Error, bucket: &str, endpoint: &str) -> String {
    // object_store keeps the server's error code (NoSuchBucket, InvalidAccessKeyId...)
    // and the transport's failure in its message chain.
    let mut text = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        text.push_str(": ");
        text.push_str(&s.to_string());
        src = s.source();
    }
    let has = |needles: &[&str]| needles.iter().any(|n| text.contains(n));
    if has(&["NoSuchBucket", "bucket does not exist"]) {
        format!(
            "bucket {bucket:?} does not exist at {endpoint}: create it (`aws s3 mb \
             s3://{bucket}`) or give an existing bucket in --dir / --path"
        )
    } else if has(&[
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        // Not a bare "403": the endpoint's port may contain it (127.0.0.1:40363).
        "403 Forbidden",
        "Forbidden",
        "ExpiredToken",
        "InvalidToken",
    ]) {
        format!(
            "{endpoint} refused our credentials: check AWS_ACCESS_KEY_ID, \
             AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, or the AWS_PROFILE's keys in \
             ~/.aws/credentials (and that they may use bucket \
             {bucket:?}) in the environment of the process doing the transfer (the daemon's, \
             for daemon requests)"
        )
    } else if has(&[
        "onnection refused",
        "error sending request",
        "dns error",
        "timed out",
        "operation timed out",
        "connect",
        "onnection reset",
        "Connection closed",
        "IncompleteMessage",
    ]) {
        format!(
            "cannot reach the S3 server at {endpoint} ({}): check AWS_ENDPOINT_URL (or \
             s3.endpoint), the network, and that the server is up; then retry",
            first_line(&text)
        )
    } else {
        format!("{}; check the S3 server at {endpoint}", first_line(&text))
    }
}

/// The message cut at a sane length (servers may answer with whole HTML pages).
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    let mut end = line.len().min(300);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(msg: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: msg.to_string().into(),
        }
    }

    #[test]
    fn a_port_with_403_in_it_is_not_a_refusal() {
        let dead = "http://127.0.0.1:40363";
        let e = generic(&format!(
            "error sending request for url ({dead}/b/k): client error (Connect): tcp \
             connect error: Connection refused"
        ));
        let said = explain(&e, "b", dead);
        assert!(said.starts_with("cannot reach the S3 server"), "{said}");
        let e = generic("Client error with status 403 Forbidden: <Code>AccessDenied</Code>");
        assert!(explain(&e, "b", dead).contains("refused our credentials"));
    }
}
