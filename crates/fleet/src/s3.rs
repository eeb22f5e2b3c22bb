//! The S3 REST calls the fleet makes: ListObjectsV2, GetObject, PutObject.
//!
//! Virtual-hosted addressing (`https://BUCKET.s3.REGION.amazonaws.com/KEY`) on AWS; path-style
//! (`ENDPOINT/BUCKET/KEY`) when one endpoint is given for every service (an emulator).

use crate::aws::{aws_error, encode, Aws};
use crate::FleetError;

/// Checks a bucket name against S3's rules for new buckets (3–63 of `a-z 0-9 . -`, starting and
/// ending with a letter or digit), so a typo is a clear error before anything is launched.
pub fn check_bucket(bucket: &str) -> Result<(), FleetError> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && bucket.as_bytes()[0].is_ascii_alphanumeric()
        && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(FleetError::Input(format!("not an S3 bucket name: {bucket:?}")))
    }
}

fn key_path(key: &str) -> String {
    key.split('/').map(encode).collect::<Vec<_>>().join("/")
}

fn bucket_url(aws: &Aws, bucket: &str) -> String {
    match &aws.config.endpoint {
        Some(e) => format!("{e}/{bucket}"),
        None => format!("https://{bucket}.s3.{}.amazonaws.com", aws.config.region),
    }
}

fn object_url(aws: &Aws, bucket: &str, key: &str) -> String {
    format!("{}/{}", bucket_url(aws, bucket), key_path(key))
}

/// Every key under `prefix` with its size, in S3's order (all pages).
pub fn list(aws: &Aws, bucket: &str, prefix: &str) -> Result<Vec<(String, u64)>, FleetError> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        // The query is in canonical (sorted) order already, as SigV4 signs it.
        let mut query = String::new();
        if let Some(t) = &token {
            query.push_str(&format!("continuation-token={}&", encode(t)));
        }
        query.push_str(&format!("list-type=2&prefix={}", encode(prefix)));
        let url = format!("{}/?{query}", bucket_url(aws, bucket));
        let resp = aws.send("s3", "ListObjectsV2", "GET", &url, &[], b"")?;
        if resp.status != 200 {
            return Err(aws_error("s3", "ListObjectsV2", resp.status, &resp.body));
        }
        let text = String::from_utf8_lossy(&resp.body);
        let doc = roxmltree::Document::parse(&text).map_err(|e| FleetError::Transport {
            service: "s3".into(),
            action: "ListObjectsV2".into(),
            message: format!("unreadable answer: {e}"),
        })?;
        let root = doc.root_element();
        for c in root.children().filter(|n| n.has_tag_name("Contents")) {
            let field = |name: &str| c.children().find(|n| n.has_tag_name(name)).and_then(|n| n.text());
            if let Some(key) = field("Key") {
                out.push((key.to_string(), field("Size").and_then(|s| s.parse().ok()).unwrap_or(0)));
            }
        }
        let truncated = root.children().find(|n| n.has_tag_name("IsTruncated")).and_then(|n| n.text()) == Some("true");
        token = root
            .children()
            .find(|n| n.has_tag_name("NextContinuationToken"))
            .and_then(|n| n.text())
            .map(str::to_string);
        if !truncated || token.is_none() {
            return Ok(out);
        }
    }
}

/// One object's bytes.
pub fn get(aws: &Aws, bucket: &str, key: &str) -> Result<Vec<u8>, FleetError> {
    let resp = aws.send("s3", "GetObject", "GET", &object_url(aws, bucket, key), &[], b"")?;
    if resp.status != 200 {
        return Err(aws_error("s3", "GetObject", resp.status, &resp.body));
    }
    Ok(resp.body)
}

/// Writes one object (the instances upload with the AWS CLI; the tool writes the run's manifest).
pub fn put(aws: &Aws, bucket: &str, key: &str, body: &[u8], content_type: &str) -> Result<(), FleetError> {
    // S3 checks the body against the x-amz-content-sha256 header the signer adds, so a corrupted
    // upload is refused.
    let resp =
        aws.send("s3", "PutObject", "PUT", &object_url(aws, bucket, key), &[("content-type", content_type)], body)?;
    if resp.status != 200 {
        return Err(aws_error("s3", "PutObject", resp.status, &resp.body));
    }
    Ok(())
}
