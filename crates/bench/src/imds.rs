//! The EC2 instance metadata service, version 2 (a session token, then the instance type).
//! Used only when the user opts in (`accelrt bench --imds`); tests point it at a local mock.

use crate::{BenchError, Result};
use std::time::Duration;

/// The link-local address of the metadata service on EC2.
pub const IMDS_BASE: &str = "http://169.254.169.254";

/// Asks the metadata service at `base` for this instance's type.
pub fn instance_type(base: &str, timeout: Duration) -> Result<String> {
    let agent = ureq::AgentBuilder::new().timeout(timeout).build();
    let fail = |what: &str, e: ureq::Error| BenchError::Imds(format!("{what} at {base}: {e}"));
    let token = agent
        .put(&format!("{base}/latest/api/token"))
        .set("X-aws-ec2-metadata-token-ttl-seconds", "60")
        .call()
        .map_err(|e| fail("token request", e))?
        .into_string()
        .map_err(|e| BenchError::Imds(format!("token body: {e}")))?;
    let instance_type = agent
        .get(&format!("{base}/latest/meta-data/instance-type"))
        .set("X-aws-ec2-metadata-token", token.trim())
        .call()
        .map_err(|e| fail("instance-type request", e))?
        .into_string()
        .map_err(|e| BenchError::Imds(format!("instance-type body: {e}")))?;
    let t = instance_type.trim();
    if t.is_empty() || !t.contains('.') || t.len() > 64 {
        return Err(BenchError::Imds(format!("unexpected instance type {t:?}")));
    }
    Ok(t.to_string())
}
