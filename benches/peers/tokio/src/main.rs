//! tether-bench-tokio {echo|http} PORT
//!
//! The Tokio peer of benches/run.py, written for tether's benchmarks: one current_thread
//! runtime (one core, like the other peers), one task per connection. `echo` sends back
//! every byte it reads; `http` answers every request (whatever ends with an empty line) with
//! the same "Hello, World!" response as benches/peers/c/canned_http.h, one per request, in
//! order, written once per read however many requests that read brought.

use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The HTTP date of `secs` since the epoch (RFC 9110 IMF-fixdate).
fn http_date(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian, 400-year eras).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days.rem_euclid(7)) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The canned response, rebuilt when the second changes.
struct Canned {
    second: u64,
    bytes: Vec<u8>,
}

impl Canned {
    fn get(&mut self) -> &[u8] {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        if now != self.second || self.bytes.is_empty() {
            self.second = now;
            self.bytes = format!(
                "HTTP/1.1 200 OK\r\nServer: tokio\r\nDate: {}\r\n\
                 Content-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!",
                http_date(now)
            )
            .into_bytes();
        }
        &self.bytes
    }
}

/// Counts the requests ending in `data` (each "\r\n\r\n"), carrying a partial terminator
/// across reads in `state`.
fn count_requests(data: &[u8], state: &mut u8) -> usize {
    const END: [u8; 4] = *b"\r\n\r\n";
    let mut n = 0;
    let mut s = *state as usize;
    for &c in data {
        if c == END[s] {
            s += 1;
            if s == 4 {
                n += 1;
                s = 0;
            }
        } else {
            s = if c == b'\r' { 1 } else { 0 };
        }
    }
    *state = s as u8;
    n
}

async fn echo(mut conn: TcpStream) {
    let mut buf = vec![0u8; 4096];
    loop {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if conn.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn http(mut conn: TcpStream) {
    let mut buf = vec![0u8; 4096];
    let mut out = Vec::with_capacity(4096);
    let mut canned = Canned { second: 0, bytes: Vec::new() };
    let mut state = 0u8;
    loop {
        let n = match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let requests = count_requests(&buf[..n], &mut state);
        if requests == 0 {
            continue;
        }
        out.clear();
        let response = canned.get();
        for _ in 0..requests {
            out.extend_from_slice(response);
        }
        if conn.write_all(&out).await.is_err() {
            return;
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 || (args[1] != "echo" && args[1] != "http") {
        eprintln!("usage: tether-bench-tokio {{echo|http}} PORT");
        std::process::exit(2);
    }
    let http_mode = args[1] == "http";
    let port: u16 = args[2].parse().unwrap_or_else(|_| {
        eprintln!("tether-bench-tokio: bad port {}", args[2]);
        std::process::exit(2);
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap_or_else(|e| {
            eprintln!("tether-bench-tokio: listen on port {}: {}", port, e);
            std::process::exit(1);
        });
        loop {
            let conn = match listener.accept().await {
                Ok((c, _)) => c,
                Err(_) => continue,
            };
            let _ = conn.set_nodelay(true);
            if http_mode {
                tokio::spawn(http(conn));
            } else {
                tokio::spawn(echo(conn));
            }
        }
    });
}
