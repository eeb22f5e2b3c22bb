//! A malformed `$ACCELRT_PJRT_BUCKETS` is a configuration error naming the variable and its value,
//! not an invalid device (it used to be `Error::InvalidDevice` for `xla:cpu`, which is fine).
//! Its own test binary: it sets the variable for the whole process.

use accelrt_core::{DeviceSpec, Error};
use accelrt_pjrt_backend::{PjrtBackend, BUCKETS_ENV};

#[test]
fn a_malformed_bucket_variable_is_a_configuration_error() {
    std::env::set_var(BUCKETS_ENV, "batch=0");
    let err = PjrtBackend::new(&DeviceSpec::XlaCpu).err().expect("a malformed bucket list is refused");
    match &err {
        Error::Backend { backend, message } => {
            assert_eq!(backend, "pjrt");
            assert!(message.contains("ACCELRT_PJRT_BUCKETS") && message.contains("`batch=0`"), "{message}");
        }
        other => panic!("expected a configuration error of the pjrt backend, got {other:?}"),
    }
    assert!(!err.to_string().contains("invalid device"), "{err}");
}
