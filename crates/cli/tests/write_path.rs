//! The write path's hand-offs, where they could fail in ways a benchmark would not show: replies
//! of a pipeline that spans many reads and log entries come back in order; a client that does not
//! read its replies holds up nobody else; and a bulk pipeline, whose rounds grow to many log
//! entries and fsyncs, never has a push acknowledged before it is on disk (kill -9 mid-load).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{TestServer, until};

/// One RESP request, as a client library encodes it.
fn request(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The replies this file reads: integers, bulk strings (their length and first bytes), errors.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Status(String),
    Error(String),
}

fn read_reply(r: &mut impl BufRead) -> std::io::Result<Reply> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let line = line.trim_end();
    let (kind, rest) = line.split_at(1);
    Ok(match kind {
        ":" => Reply::Int(rest.parse().expect("integer reply")),
        "+" => Reply::Status(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        "$" if rest == "-1" => Reply::Nil,
        "$" => {
            let len: usize = rest.parse().expect("bulk length");
            let mut body = vec![0; len + 2];
            r.read_exact(&mut body)?;
            body.truncate(len);
            Reply::Bulk(body)
        }
        other => panic!("unexpected reply type {other:?} in {line:?}"),
    })
}

/// `[id, receipt, payload, deliveries]`, as `Q.POP` returns each delivery.
type Delivery = (u64, u64, Vec<u8>, u64);

/// A payload of `len` bytes that starts with its number, so a reply can be matched to its request.
fn numbered(i: usize, len: usize) -> Vec<u8> {
    let mut p = format!("{i}:").into_bytes();
    p.resize(len.max(p.len()), b'x');
    p
}

#[test]
fn pipelined_replies_come_back_in_request_order_across_reads_and_entries() {
    let server = TestServer::start();
    let stream = server.raw();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // Writes (INCR, SET, Q.PUSH), reads (GET) and a lock in one pipeline of varied sizes, so the
    // server's reads end mid-request, its rounds cut the pipeline at odd places and its writes
    // share entries; sent from a thread while this one reads, as a pipelining client does.
    const N: usize = 6_000;
    let mut expected = Vec::with_capacity(N);
    let mut sent = Vec::new();
    let mut incrs = 0;
    for i in 0..N {
        let size = [5, 700, 3_000, 40][i % 4];
        match i % 6 {
            0 | 3 => {
                sent.extend(request(&[b"INCR", b"counter"]));
                incrs += 1;
                expected.push(Reply::Int(incrs));
            }
            1 => {
                sent.extend(request(&[b"SET", b"last", &numbered(i, size)]));
                expected.push(Reply::Status("OK".into()));
            }
            2 => {
                sent.extend(request(&[b"GET", b"last"]));
                expected.push(Reply::Bulk(numbered(i - 1, [5, 700, 3_000, 40][(i - 1) % 4])));
            }
            4 => {
                sent.extend(request(&[b"Q.PUSH", b"ordered", &numbered(i, size)]));
                expected.push(Reply::Int(-1)); // an id: checked below to grow
            }
            _ => {
                sent.extend(request(&[b"LOCK.RELEASE", b"nobody", b"1"]));
                expected.push(Reply::Int(0));
            }
        }
    }
    let mut writer = stream.try_clone().unwrap();
    let sending = thread::spawn(move || writer.write_all(&sent));
    let mut reader = BufReader::new(stream);
    let mut last_id = 0;
    for (i, want) in expected.iter().enumerate() {
        let got = read_reply(&mut reader).unwrap_or_else(|e| panic!("reply {i}: {e}"));
        match (want, &got) {
            (Reply::Int(-1), Reply::Int(id)) => {
                assert!(*id > last_id, "reply {i}: message ids grow in push order ({id} after {last_id})");
                last_id = *id;
            }
            _ => assert_eq!(&got, want, "reply {i} out of order"),
        }
    }
    sending.join().unwrap().expect("pipeline sent");
}

#[test]
fn a_client_that_does_not_read_its_replies_holds_up_nobody_else() {
    let server = TestServer::start();
    let mut setup = server.client();
    let big = vec![b'v'; 256 * 1024];
    redis::cmd("SET").arg("big").arg(&big).query::<()>(&mut setup).unwrap();
    // 200 GETs of 256 KiB: 50 MiB of replies, far more than the socket buffers hold, so the
    // server's writes to this client block until it reads.
    const GETS: usize = 200;
    let mut slow = server.raw();
    let pipeline: Vec<u8> = (0..GETS).flat_map(|_| request(&[b"GET", b"big"])).collect();
    slow.write_all(&pipeline).unwrap();
    // Until the slow client's replies fill the sockets between it and the server.
    thread::sleep(Duration::from_millis(300));

    // Meanwhile others write, read, lock and wait in line, and are answered.
    let mut other = server.client();
    let mut waiter = server.client();
    for i in 0..200_i64 {
        let n: i64 = redis::cmd("INCR").arg("others").query(&mut other).unwrap();
        assert_eq!(n, i + 1);
    }
    let (token, _lease): (u64, u64) =
        redis::cmd("LOCK.ACQUIRE").arg("shared").arg(30_000).query(&mut other).unwrap();
    let granted = thread::spawn(move || {
        redis::cmd("LOCK.ACQUIRE")
            .arg("shared")
            .arg(30_000)
            .arg("WAIT")
            .arg(20_000)
            .query::<Option<(u64, u64)>>(&mut waiter)
    });
    until("the waiter is in line", Duration::from_secs(10), || {
        common::lock_info_list(&mut other, "shared", "waiters").len() == 1
    });
    let released: i64 = redis::cmd("LOCK.RELEASE").arg("shared").arg(token).query(&mut other).unwrap();
    assert_eq!(released, 1);
    let (next, _) = granted.join().unwrap().unwrap().expect("granted after the release");
    assert!(next > token, "the waiter's token {next} is newer than {token}");

    // The slow client then reads every reply, whole and in order.
    slow.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut reader = BufReader::new(slow);
    for i in 0..GETS {
        match read_reply(&mut reader).unwrap() {
            Reply::Bulk(v) => assert_eq!(v.len(), big.len(), "reply {i} whole"),
            other => panic!("reply {i}: {other:?}"),
        }
    }
}

#[test]
fn a_bulk_pipeline_never_has_a_push_acknowledged_before_it_is_durable() {
    let mut server = TestServer::start_with(&["--fsync", "always"]);
    let stream = server.raw();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // 1 KiB pushes sent as fast as the socket takes them (the server's reads grow to many
    // pushes per round, each round several entries and fsyncs), replies read as they come.
    const PUSHES: usize = 40_000;
    let mut writer = stream.try_clone().unwrap();
    let sending = thread::spawn(move || {
        for chunk in (0..PUSHES).collect::<Vec<_>>().chunks(500) {
            let bytes: Vec<u8> =
                chunk.iter().flat_map(|&i| request(&[b"Q.PUSH", b"bulk", &numbered(i, 1024)])).collect();
            if writer.write_all(&bytes).is_err() {
                return; // the server was killed
            }
        }
    });
    let acked = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let reading = thread::spawn({
        let (acked, count) = (acked.clone(), count.clone());
        move || {
            let mut reader = BufReader::new(stream);
            while let Ok(reply) = read_reply(&mut reader) {
                match reply {
                    Reply::Int(id) => acked.lock().unwrap().push(u64::try_from(id).unwrap()),
                    other => panic!("push {} answered {other:?}", count.load(Ordering::Relaxed)),
                }
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    until("a few thousand pushes acknowledged", Duration::from_secs(60), || {
        count.load(Ordering::Relaxed) >= 3_000
    });
    server.kill9();
    reading.join().unwrap();
    sending.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 3_000 && acked.len() < PUSHES, "killed mid-load: {} acknowledged", acked.len());

    server.restart();
    let mut con = server.client();
    let mut stored = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the queue was not read back in time");
        let got: Option<Vec<Delivery>> = redis::cmd("Q.POP")
            .arg("bulk")
            .arg("COUNT")
            .arg(1000)
            .arg("LEASE")
            .arg(600_000)
            .query(&mut con)
            .unwrap();
        let Some(got) = got.filter(|g| !g.is_empty()) else { break };
        for (id, _, payload, _) in got {
            stored.insert(id, payload);
        }
    }
    // Every acknowledged push is there, with the payload sent as the push its reply answered.
    for (i, id) in acked.iter().enumerate() {
        let payload = stored.get(id).unwrap_or_else(|| panic!("acknowledged push {i} (id {id}) lost"));
        assert_eq!(payload, &numbered(i, 1024), "id {id} holds push {i}'s payload");
    }
}
