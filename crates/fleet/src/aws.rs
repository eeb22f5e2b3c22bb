//! Signed requests to AWS: credentials from the environment, SigV4 signatures from `aws-sigv4`,
//! HTTP from `ureq`. Only what the EC2 Query API and the S3 REST API need.

use crate::FleetError;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use std::io::Read;
use std::time::{Duration, SystemTime};

/// Largest response body read from AWS (a DescribeInstances page or a result file is far smaller);
/// a longer one is an error rather than unbounded memory.
pub const MAX_RESPONSE_BYTES: u64 = 64 << 20;

/// Where and as whom requests go.
#[derive(Clone)]
pub struct AwsConfig {
    /// e.g. `us-east-1`.
    pub region: String,
    /// One endpoint for every service (`--endpoint-url`, `$AWS_ENDPOINT_URL`), e.g. an emulator on
    /// loopback; S3 is then addressed path-style. `None`: AWS's regional endpoints.
    pub endpoint: Option<String>,
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

impl std::fmt::Debug for AwsConfig {
    // Never print the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsConfig")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl AwsConfig {
    /// Credentials from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and (optional)
    /// `AWS_SESSION_TOKEN`; the region from `region`, else `AWS_REGION`, else `AWS_DEFAULT_REGION`;
    /// the endpoint from `endpoint`, else `AWS_ENDPOINT_URL`.
    ///
    /// Profiles, SSO and instance roles are not read here: `aws configure export-credentials
    /// --format env` turns any of them into these variables (docs/deploy.md).
    pub fn from_env(region: Option<&str>, endpoint: Option<&str>) -> Result<AwsConfig, FleetError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let (Some(access_key_id), Some(secret_access_key)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY"))
        else {
            return Err(FleetError::NoCredentials);
        };
        let region = region
            .map(str::to_string)
            .or_else(|| var("AWS_REGION"))
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .ok_or_else(|| FleetError::Input("no region: give --region or set AWS_REGION".into()))?;
        Self::new(
            region,
            endpoint.map(str::to_string).or_else(|| var("AWS_ENDPOINT_URL")),
            access_key_id,
            secret_access_key,
            var("AWS_SESSION_TOKEN"),
        )
    }

    /// Explicit settings (tests, embedding).
    pub fn new(
        region: String,
        endpoint: Option<String>,
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
    ) -> Result<AwsConfig, FleetError> {
        if region.is_empty() || !region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
            return Err(FleetError::Input(format!("not a region name: {region:?}")));
        }
        let endpoint = match endpoint {
            Some(e) => {
                let e = e.trim_end_matches('/').to_string();
                let host = e.strip_prefix("http://").or_else(|| e.strip_prefix("https://"));
                if !matches!(host, Some(h) if !h.is_empty() && !h.contains('/')) {
                    return Err(FleetError::Input(format!("the endpoint must be http(s)://host[:port], got {e:?}")));
                }
                Some(e)
            }
            None => None,
        };
        Ok(AwsConfig { region, endpoint, access_key_id, secret_access_key, session_token })
    }
}

/// A signed-request client.
pub struct Aws {
    /// Region and endpoint in use.
    pub config: AwsConfig,
    agent: ureq::Agent,
}

/// A response: status and body.
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// The body, at most [`MAX_RESPONSE_BYTES`].
    pub body: Vec<u8>,
}

impl Aws {
    /// A client; connections time out after 10 s and requests after 120 s, so a dead endpoint is an
    /// error, not a hang (the fleet's guards depend on the tool staying responsive).
    pub fn new(config: AwsConfig) -> Aws {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build();
        Aws { config, agent }
    }

    /// The endpoint URL (scheme and host, no trailing slash) of `service` (`ec2`, `s3`).
    pub fn endpoint(&self, service: &str) -> String {
        match &self.config.endpoint {
            Some(e) => e.clone(),
            None => format!("https://{service}.{}.amazonaws.com", self.config.region),
        }
    }

    /// Sends one request signed for `service`; `url` must be fully percent-encoded already.
    /// Any status is returned (callers turn AWS's error documents into [`FleetError::Aws`]);
    /// a transport failure is [`FleetError::Transport`].
    pub fn send(
        &self,
        service: &str,
        action: &str,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, FleetError> {
        let signed = sign_request(&self.config, service, method, url, headers, body, SystemTime::now())?;
        let mut req = self.agent.request(method, url);
        for (k, v) in headers {
            req = req.set(k, v);
        }
        for (k, v) in &signed {
            req = req.set(k, v);
        }
        let result = if body.is_empty() && method == "GET" { req.call() } else { req.send_bytes(body) };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => {
                return Err(FleetError::Transport {
                    service: service.into(),
                    action: action.into(),
                    message: e.to_string(),
                })
            }
        };
        let status = resp.status();
        let mut body = Vec::new();
        resp.into_reader().take(MAX_RESPONSE_BYTES + 1).read_to_end(&mut body).map_err(|e| FleetError::Transport {
            service: service.into(),
            action: action.into(),
            message: format!("reading the answer: {e}"),
        })?;
        if body.len() as u64 > MAX_RESPONSE_BYTES {
            return Err(FleetError::Transport {
                service: service.into(),
                action: action.into(),
                message: format!("answer longer than {MAX_RESPONSE_BYTES} bytes"),
            });
        }
        Ok(Response { status, body })
    }
}

/// The headers SigV4 adds to a request (`authorization`, `x-amz-date`, the session token, and for S3
/// `x-amz-content-sha256`), signed at `time`.
pub fn sign_request(
    config: &AwsConfig,
    service: &str,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    time: SystemTime,
) -> Result<Vec<(String, String)>, FleetError> {
    let identity: Identity = aws_credential_types::Credentials::new(
        &config.access_key_id,
        &config.secret_access_key,
        config.session_token.clone(),
        None,
        "environment",
    )
    .into();
    let mut settings = SigningSettings::default();
    if service == "s3" {
        // S3 signs the path as sent (no normalisation, no double encoding) and wants the payload
        // hash in x-amz-content-sha256.
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    }
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&config.region)
        .name(service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| FleetError::Signing(e.to_string()))?
        .into();
    let signable = SignableRequest::new(method, url, headers.iter().copied(), SignableBody::Bytes(body))
        .map_err(|e| FleetError::Signing(e.to_string()))?;
    let (instructions, _) = sign(signable, &params).map_err(|e| FleetError::Signing(e.to_string()))?.into_parts();
    Ok(instructions.headers().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

/// AWS's error document (`<Errors><Error><Code>…<Message>…` for EC2, `<Error><Code>…` for S3) as
/// [`FleetError::Aws`]; a body that is not one is quoted (shortened).
pub fn aws_error(service: &str, action: &str, status: u16, body: &[u8]) -> FleetError {
    let text = String::from_utf8_lossy(body);
    let (code, message) = match roxmltree::Document::parse(&text) {
        Ok(doc) => {
            let find = |name: &str| {
                doc.descendants().find(|n| n.has_tag_name(name)).and_then(|n| n.text()).unwrap_or("").to_string()
            };
            (find("Code"), find("Message"))
        }
        Err(_) => (String::new(), text.chars().take(300).collect()),
    };
    FleetError::Aws { service: service.into(), action: action.into(), status, code, message }
}

/// Percent-encoding as SigV4 wants it: everything but `A-Z a-z 0-9 - _ . ~`.
pub const AWS_ENCODE: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// `s` percent-encoded for a query value or a path segment.
pub fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, AWS_ENCODE).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_keeps_only_unreserved_characters() {
        assert_eq!(encode("a b/c~d_e.f-g+h=i&"), "a%20b%2Fc~d_e.f-g%2Bh%3Di%26");
    }

    #[test]
    fn bad_region_and_endpoint_are_refused() {
        let mk = |r: &str, e: Option<&str>| AwsConfig::new(r.into(), e.map(Into::into), "k".into(), "s".into(), None);
        assert!(mk("us-east-1", None).is_ok());
        assert!(mk("us-east-1", Some("http://127.0.0.1:5000/")).is_ok());
        assert!(mk("US East", None).is_err());
        assert!(mk("us-east-1", Some("ftp://x")).is_err());
        assert!(mk("us-east-1", Some("http://x/y/z")).is_err());
    }

    #[test]
    fn error_documents_name_code_and_message() {
        let ec2 = br#"<Response><Errors><Error><Code>InvalidAMIID.NotFound</Code><Message>no such image</Message></Error></Errors></Response>"#;
        let e = aws_error("ec2", "RunInstances", 400, ec2).to_string();
        assert!(
            e.contains("InvalidAMIID.NotFound") && e.contains("no such image") && e.contains("RunInstances"),
            "{e}"
        );
        let e = aws_error("s3", "GetObject", 502, b"<html>bad gateway").to_string();
        assert!(e.contains("bad gateway") && e.contains("502"), "{e}");
    }

    /// AWS's SigV4 test suite, case `get-vanilla`: the published signature for a fixed key, time,
    /// region and service. This checks what this crate hands the signer (URL, headers, body, time),
    /// since moto does not check signatures.
    #[test]
    fn signature_matches_the_sigv4_test_suite() {
        let config = AwsConfig::new(
            "us-east-1".into(),
            None,
            "AKIDEXAMPLE".into(),
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            None,
        )
        .unwrap();
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160); // 20150830T123600Z
        let headers =
            sign_request(&config, "service", "GET", "https://example.amazonaws.com/", &[], b"", time).unwrap();
        let get = |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
        assert_eq!(get("x-amz-date"), Some("20150830T123600Z"));
        assert_eq!(
            get("authorization"),
            Some("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
        );
        // S3 requests carry the payload's hash (here of the empty body) and sign it.
        let s3 = sign_request(&config, "s3", "GET", "https://example.amazonaws.com/b/k", &[], b"", time).unwrap();
        let hash = s3.iter().find(|(k, _)| k == "x-amz-content-sha256").map(|(_, v)| v.as_str());
        assert_eq!(hash, Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let c =
            AwsConfig::new("us-east-1".into(), None, "AKIDEXAMPLE".into(), "very-secret".into(), Some("tok".into()))
                .unwrap();
        let s = format!("{c:?}");
        assert!(s.contains("AKIDEXAMPLE") && !s.contains("very-secret") && !s.contains("tok"), "{s}");
    }
}
