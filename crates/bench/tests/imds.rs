//! The IMDSv2 client against a mock metadata server on 127.0.0.1 (never a real address).

use accelrt_bench::imds::instance_type;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::Duration;

/// The client's timeout where the mock answers: generous, so a busy machine cannot fail the test
/// (the mock answers at once; the timeout only bounds a broken client).
const ANSWERED: Duration = Duration::from_secs(30);

/// Serves `n` requests; answers like IMDSv2 (a token from PUT, the instance type for GET with that token).
fn mock(n: usize, instance: &'static str) -> (String, std::thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for stream in listener.incoming().take(n) {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            let mut headers = Vec::new();
            reader.read_line(&mut request).unwrap();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                headers.push(line.trim().to_ascii_lowercase());
            }
            let has = |h: &str| headers.iter().any(|l| l.starts_with(h));
            let (status, body) =
                if request.starts_with("PUT /latest/api/token") && has("x-aws-ec2-metadata-token-ttl-seconds:") {
                    ("200 OK", "TOKEN123")
                } else if request.starts_with("GET /latest/meta-data/instance-type")
                    && headers.iter().any(|l| l == "x-aws-ec2-metadata-token: token123")
                {
                    ("200 OK", instance)
                } else {
                    ("401 Unauthorized", "")
                };
            seen.push(request.trim().to_string());
            write!(stream, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                .unwrap();
        }
        seen
    });
    (base, handle)
}

#[test]
fn reads_the_instance_type_with_a_session_token() {
    let (base, server) = mock(2, "inf2.xlarge");
    assert_eq!(instance_type(&base, ANSWERED).unwrap(), "inf2.xlarge");
    let seen = server.join().unwrap();
    assert!(seen[0].starts_with("PUT /latest/api/token"));
    assert!(seen[1].starts_with("GET /latest/meta-data/instance-type"));
}

#[test]
fn garbage_answers_are_refused() {
    let (base, server) = mock(2, "<html>not an instance</html>");
    let err = instance_type(&base, ANSWERED).unwrap_err().to_string();
    assert!(err.contains("unexpected instance type"), "{err}");
    server.join().unwrap();
}

#[test]
fn no_metadata_service_is_a_quick_clear_error() {
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = instance_type(&format!("http://127.0.0.1:{port}"), Duration::from_secs(1)).unwrap_err().to_string();
    assert!(err.contains("instance metadata service") && err.contains("token request"), "{err}");
}
