//! A real S3-compatible server for the tests: moto's server (from PyPI, in the venv
//! `scripts/install-deps.sh` makes) on a free 127.0.0.1 port, killed on drop, and a
//! few bucket operations through boto3 (which moto brings) to set up and check what a
//! test did: create a bucket, list keys and unfinished multipart uploads, change an
//! object.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{skip, wait_for};

/// Where install-deps.sh puts moto.
pub const MOTO_VENV: &str = "/opt/cedana/moto-venv";
/// The key pair every test uses: moto accepts any.
pub const ACCESS_KEY: &str = "AKIACEDANATEST000001";
/// A secret no output may ever show (the tests grep for it).
pub const SECRET_KEY: &str = "cedana-test-secret-s3cr3t-value-0123456789";

/// boto3 operations on the server, one per run: `mb`, `ls`, `uploads`, `put`,
/// `start-upload`.
const HELPER: &str = r#"
import sys, boto3
op, endpoint, bucket = sys.argv[1], sys.argv[2], sys.argv[3]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
if op == "mb":
    s3.create_bucket(Bucket=bucket)
elif op == "ls":
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            print(o["Key"], o["Size"])
elif op == "uploads":
    for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        print(u["Key"], u["UploadId"])
elif op == "put":
    s3.put_object(Bucket=bucket, Key=sys.argv[4], Body=sys.stdin.buffer.read())
elif op == "start-upload":
    print(s3.create_multipart_upload(Bucket=bucket, Key=sys.argv[4])["UploadId"])
elif op in ("iam-key", "iam-s3-key"):
    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1")
    iam.create_user(UserName=bucket)
    if op == "iam-s3-key":
        iam.put_user_policy(UserName=bucket, PolicyName="s3", PolicyDocument='{"Version": '
            '"2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}')
    k = iam.create_access_key(UserName=bucket)["AccessKey"]
    print(k["AccessKeyId"], k["SecretAccessKey"])
"#;

/// Requests moto serves before it checks credentials, when started with auth: the
/// bucket and an IAM user's key are made in them.
const NO_AUTH_REQUESTS: &str = "3";
/// The same with the user's S3 policy added.
const NO_AUTH_REQUESTS_S3_USER: &str = "4";

/// A moto server on 127.0.0.1, stopped on drop.
pub struct Moto {
    child: Option<Child>,
    port: u16,
    /// The key pair [`Moto::aws_env`] and the boto3 helper use.
    keys: (String, String),
}

/// A free TCP port on 127.0.0.1 (bound, then released for the server to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Moto {
    /// The venv's python, if moto is installed.
    fn python() -> Option<PathBuf> {
        let py = Path::new(MOTO_VENV).join("bin/python");
        py.exists().then_some(py)
    }

    /// Starts a server, or [`skip`]s (a failure under `CEDANA_TEST_E2E=1`).
    #[track_caller]
    pub fn start() -> Option<Moto> {
        if Self::python().is_none() {
            skip(
                &format!("no moto server in {MOTO_VENV}"),
                "run scripts/install-deps.sh (it installs moto[server] into that venv)",
            );
            return None;
        }
        Some(Self::start_on(free_port()))
    }

    /// Starts a server that checks credentials, with `bucket` and a user's key pair
    /// made first; returns the server and the valid (key id, secret).
    #[track_caller]
    pub fn start_with_auth(bucket: &str) -> Option<(Moto, String, String)> {
        Self::python()?;
        let moto = Self::spawn(free_port(), true);
        moto.create_bucket(bucket);
        let out = moto.helper(&["iam-key", "tester"], None);
        let (id, secret) = out.trim().split_once(' ')?;
        Some((moto, id.to_string(), secret.to_string()))
    }

    /// Like [`Moto::start_with_auth`], but the user's key may use S3 (a policy allowing
    /// `s3:*`): requests signed with it succeed, others are refused.
    #[track_caller]
    pub fn start_with_s3_user(bucket: &str) -> Option<(Moto, String, String)> {
        Self::python()?;
        let moto = Self::spawn_counting(free_port(), Some(NO_AUTH_REQUESTS_S3_USER));
        moto.create_bucket(bucket);
        let out = moto.helper(&["iam-s3-key", "tester"], None);
        let (id, secret) = out.trim().split_once(' ')?;
        Some((moto, id.to_string(), secret.to_string()))
    }

    /// Starts a server on `port` (a restart on the same address).
    pub fn start_on(port: u16) -> Moto {
        Self::spawn(port, false)
    }

    fn spawn(port: u16, auth: bool) -> Moto {
        Self::spawn_counting(port, auth.then_some(NO_AUTH_REQUESTS))
    }

    /// A server that checks credentials after `no_auth` requests, if given.
    fn spawn_counting(port: u16, no_auth: Option<&str>) -> Moto {
        let mut cmd = Command::new(Path::new(MOTO_VENV).join("bin/moto_server"));
        if let Some(n) = no_auth {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", n);
        }
        let child = cmd
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Moto {
            child: Some(child),
            port,
            keys: (ACCESS_KEY.into(), SECRET_KEY.into()),
        };
        wait_for("moto to listen", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        });
        moto
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// From now on its environment and the helper sign with (`id`, `secret`): a user's
    /// key pair, on a server that checks credentials.
    pub fn with_keys(mut self, id: &str, secret: &str) -> Self {
        self.keys = (id.into(), secret.into());
        self
    }

    /// The `AWS_*` environment that reaches it.
    pub fn aws_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", self.keys.0.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.keys.1.clone()),
            ("AWS_REGION", "us-east-1".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn helper(&self, args: &[&str], stdin: Option<&[u8]>) -> String {
        let py = Self::python().expect("moto venv");
        let mut c = Command::new(py);
        c.args(["-c", HELPER])
            .arg(args[0])
            .arg(self.endpoint())
            .args(&args[1..])
            .envs(self.aws_env())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = c.spawn().expect("run the boto3 helper");
        if let Some(data) = stdin {
            use std::io::Write;
            let mut w = child.stdin.take().expect("stdin");
            w.write_all(data).expect("write stdin");
        }
        let out = child.wait_with_output().expect("boto3 helper");
        assert!(
            out.status.success(),
            "boto3 {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates `bucket`.
    pub fn create_bucket(&self, bucket: &str) {
        self.helper(&["mb", bucket], None);
    }

    /// Every key of `bucket` with its size.
    pub fn keys(&self, bucket: &str) -> Vec<(String, u64)> {
        self.helper(&["ls", bucket], None)
            .lines()
            .filter_map(|l| {
                let (k, s) = l.rsplit_once(' ')?;
                Some((k.to_string(), s.parse().ok()?))
            })
            .collect()
    }

    /// Keys of the multipart uploads of `bucket` not completed nor aborted.
    pub fn open_uploads(&self, bucket: &str) -> Vec<String> {
        self.helper(&["uploads", bucket], None)
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    }

    /// Starts a multipart upload of `key` in `bucket`; its id.
    pub fn start_upload(&self, bucket: &str, key: &str) -> String {
        self.helper(&["start-upload", bucket, key], None)
            .trim()
            .to_string()
    }

    /// Writes `data` as object `key` of `bucket` (replacing it).
    pub fn put(&self, bucket: &str, key: &str, data: &[u8]) {
        self.helper(&["put", bucket, key], Some(data));
    }

    /// Stops the server now (a crash: SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}
