//! The multipart uploads open on one key, from S3's ListMultipartUploads (which
//! `object_store` has no call for), signed with the bucket client's own credentials.
//! Recovery needs it for an upload whose id never reached the journal: its process died
//! between asking the server for the upload and recording the answer.

use object_store::aws::{AmazonS3, AwsAuthorizer};
use object_store::client::{HttpConnector, HttpRequestBody, ReqwestConnector};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;

use super::client::Addressing;

/// What a query value keeps unescaped: RFC 3986's unreserved characters, as SigV4's
/// canonical form has them.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The answer's body (only what recovery reads).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Listing {
    #[serde(default, rename = "Upload")]
    uploads: Vec<Listed>,
}

/// One open upload of the answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Listed {
    key: String,
    upload_id: String,
}

/// The ids of the multipart uploads open on exactly `key` (not on keys it prefixes).
pub(super) async fn open_on(
    client: &AmazonS3,
    at: &Addressing,
    key: &str,
) -> Result<Vec<String>, String> {
    let credential = client
        .credentials()
        .get_credential()
        .await
        .map_err(|e| e.to_string())?;
    let url = format!(
        "{}?uploads&prefix={}",
        at.bucket_url,
        utf8_percent_encode(key, QUERY_VALUE)
    );
    let mut request = http::Request::get(&url)
        .body(HttpRequestBody::empty())
        .map_err(|e| format!("cannot make the request for {url}: {e}"))?;
    AwsAuthorizer::new(&credential, "s3", &at.region).authorize(&mut request, None);
    let http = ReqwestConnector::default()
        .connect(&at.options)
        .map_err(|e| e.to_string())?;
    let response = http.execute(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .bytes()
        .await
        .map_err(|e| e.to_string())?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        return Err(format!("the server answered {status}: {}", text.trim()));
    }
    let listing = parse(&body)?;
    Ok(listing
        .uploads
        .into_iter()
        .filter(|u| u.key == key)
        .map(|u| u.upload_id)
        .collect())
}

/// The listing in a ListMultipartUploads answer.
fn parse(body: &[u8]) -> Result<Listing, String> {
    quick_xml::de::from_reader(body)
        .map_err(|e| format!("cannot read the server's list of multipart uploads: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_names_each_upload_with_its_key() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>
  <Prefix>p/ck/shard-0.zst</Prefix><MaxUploads>1000</MaxUploads><IsTruncated>false</IsTruncated>
  <Upload><Key>p/ck/shard-0.zst</Key><UploadId>one</UploadId>
    <Initiator><ID>x</ID></Initiator><StorageClass>STANDARD</StorageClass>
    <Initiated>2026-12-02T10:00:00.000Z</Initiated></Upload>
  <Upload><Key>p/ck/shard-0.zst.x</Key><UploadId>two</UploadId></Upload>
</ListMultipartUploadsResult>"#;
        let l = parse(body).expect("parse");
        let got: Vec<_> = l
            .uploads
            .iter()
            .map(|u| (u.key.as_str(), u.upload_id.as_str()))
            .collect();
        assert_eq!(
            got,
            [("p/ck/shard-0.zst", "one"), ("p/ck/shard-0.zst.x", "two")]
        );
        let none = br#"<ListMultipartUploadsResult><Bucket>b</Bucket><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>"#;
        assert!(parse(none).expect("parse").uploads.is_empty());
    }
}
