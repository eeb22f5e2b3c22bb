//! What `bench --url` reads from a server is bounded: an endless `/info` answer is an error after
//! 1 MiB, not a process that grows until it is killed.

use std::io::{Read, Write};
use std::net::TcpListener;

#[test]
fn an_endless_info_answer_is_refused_after_a_bounded_read() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut request = [0u8; 1024];
        let _ = s.read(&mut request);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n[");
        // 64 MiB of an array that never closes; the client stops reading long before.
        let chunk = "1,".repeat(32 << 10);
        let mut sent = 0usize;
        for _ in 0..1024 {
            if s.write_all(chunk.as_bytes()).is_err() {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let err = accelrt_bench::http_target::server_info(&url).unwrap_err();
    assert!(err.to_string().contains("is not an accelrt server's info"), "{err}");
    // The client hung up after its bound; only what socket buffers hold got through beyond it.
    let sent = server.join().unwrap();
    assert!(sent < 16 << 20, "the client read {sent} bytes of an endless answer");
}
