//! accelrt's benchmark fleet (`accelrt fleet`, feature `fleet` of the `accelrt` package).
//!
//! `run` launches one EC2 instance per instance type; each boots with user data that installs
//! accelrt, runs `accelrt bench --imds`, uploads its results, log and status to S3, and powers
//! off — and, launched with shutdown behaviour `terminate`, is terminated. `collect` downloads the
//! results and writes the merged report with `accelrt report`'s writer.
//!
//! Guards: the worst case (every instance running until its deadline, priced from the bench
//! crate's catalog) must be within `--max-spend` before anything launches; every instance
//! schedules its own power-off at the deadline first thing at boot; the tool terminates what it
//! launched when a launch fails, when it is interrupted, when waiting fails and at the deadline.
//!
//! AWS is reached through the EC2 Query API and the S3 REST API, signed with `aws-sigv4` and sent
//! with `ureq` (see docs/deploy.md for why not the AWS SDK crates, and for what has run against AWS).

pub mod aws;
pub mod ec2;
pub mod plan;
pub mod run;
pub mod s3;

pub use aws::{Aws, AwsConfig};
pub use plan::{new_run_id, plan, Binary, Family, FleetOptions, Market, Plan};
pub use run::{collect, launch, wait, Collected, Manifest, Outcome};

/// What can go wrong in the fleet.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// Bad input: a flag, a name, a bound.
    #[error("{0}")]
    Input(String),
    /// No credentials in the environment.
    #[error("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), e.g. eval \"$(aws configure export-credentials --format env)\"")]
    NoCredentials,
    /// The request could not be signed.
    #[error("signing the request: {0}")]
    Signing(String),
    /// AWS answered with an error.
    #[error("AWS {service} {action}: {code}: {message} (HTTP {status})")]
    Aws {
        /// `ec2`, `s3`.
        service: String,
        /// e.g. `RunInstances`.
        action: String,
        /// HTTP status.
        status: u16,
        /// AWS's error code, e.g. `UnauthorizedOperation`.
        code: String,
        /// AWS's message.
        message: String,
    },
    /// No answer (connection, timeout, unreadable body).
    #[error("AWS {service} {action}: {message}")]
    Transport {
        /// `ec2`, `s3`.
        service: String,
        /// The action.
        action: String,
        /// What failed.
        message: String,
    },
    /// A local or downloaded file.
    #[error("{path}: {message}")]
    File {
        /// Where.
        path: String,
        /// What.
        message: String,
    },
    /// A result file or the report (from the bench crate).
    #[error(transparent)]
    Bench(#[from] accelrt_bench::BenchError),
    /// Ctrl-C.
    #[error("interrupted")]
    Interrupted,
    /// The run passed its deadline.
    #[error("the run passed its deadline ({0} min after launch)")]
    Deadline(u32),
    /// A failure after launching: what was terminated, and anything that could not be.
    #[error("{cause}; terminated {terminated:?}{}", if left_running.is_empty() { String::new() } else { format!("; COULD NOT TERMINATE {left_running:?}: terminate them by hand (they also power off at their deadline)") })]
    Stopped {
        /// The failure.
        cause: Box<FleetError>,
        /// Instances terminated because of it.
        terminated: Vec<String>,
        /// Instances whose termination failed, with the reason.
        left_running: Vec<String>,
    },
    /// `collect` found no result files.
    #[error("no result files under {location}; instance outcomes: {outcomes:?} (see the logs/ folder)")]
    NoResults {
        /// `s3://bucket/prefix/run/`.
        location: String,
        /// What each instance reported.
        outcomes: Vec<(String, Outcome)>,
    },
}
