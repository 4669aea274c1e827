//! Tests of the pure parts of tusk bench: URL resolution, sizes, percentiles, payload.

use http_body_util::BodyExt;
use tusk_bench::payload::{Payload, FRAME};
use tusk_bench::util::{parse_size, percentile, remove_dot_segments, resolve, Obj, Target};

const BASE: &str = "http://127.0.0.1:8080/files/";

#[test]
fn resolves_locations() {
    let cases = [
        ("http://other:9/x/abc", "http://other:9/x/abc"),
        ("/files/abc", "http://127.0.0.1:8080/files/abc"),
        ("abc", "http://127.0.0.1:8080/files/abc"),
        ("./abc", "http://127.0.0.1:8080/files/abc"),
        ("../up/abc", "http://127.0.0.1:8080/up/abc"),
        ("//cdn.example:81/f/1", "http://cdn.example:81/f/1"),
        ("abc?x=1#frag", "http://127.0.0.1:8080/files/abc?x=1"),
        ("  /files/abc  ", "http://127.0.0.1:8080/files/abc"),
        ("", "http://127.0.0.1:8080/files/"),
    ];
    for (reference, want) in cases {
        assert_eq!(resolve(BASE, reference).unwrap(), want, "{reference:?}");
    }
    // Without a trailing slash the last segment of the base is replaced (RFC 3986).
    assert_eq!(resolve("http://h/files", "abc").unwrap(), "http://h/abc");
    assert_eq!(resolve("http://h", "abc").unwrap(), "http://h/abc");
    assert_eq!(resolve("http://h/a/b?q=1", "?z").unwrap(), "http://h/a/b?z");
    assert!(resolve("/relative/base", "abc").is_err());
}

#[test]
fn removes_dot_segments() {
    // RFC 3986 section 5.4 examples.
    assert_eq!(remove_dot_segments("/a/b/c/./../../g"), "/a/g");
    assert_eq!(remove_dot_segments("mid/content=5/../6"), "mid/6");
    assert_eq!(remove_dot_segments("/a/b/.."), "/a/");
    assert_eq!(remove_dot_segments("/a/b/."), "/a/b/");
    assert_eq!(remove_dot_segments("/../g"), "/g");
}

#[test]
fn parses_targets() {
    let t = Target::parse("http://127.0.0.1:8080/files/abc?x=1").unwrap();
    assert_eq!(t.host, "127.0.0.1");
    assert_eq!(t.port, 8080);
    assert_eq!(t.authority, "127.0.0.1:8080");
    assert_eq!(t.path_and_query, "/files/abc?x=1");
    let t = Target::parse("http://example.com").unwrap();
    assert_eq!((t.port, t.path_and_query.as_str()), (80, "/"));
    let t = Target::parse("http://[::1]:1080/files/").unwrap();
    assert_eq!(
        (t.host.as_str(), t.authority.as_str()),
        ("::1", "[::1]:1080")
    );
    assert!(Target::parse("https://example.com/files/").is_err());
    assert!(Target::parse("/files/").is_err());
    assert!(Target::parse("not a url").is_err());
}

#[test]
fn parses_sizes() {
    assert_eq!(parse_size("4096"), Ok(4096));
    assert_eq!(parse_size("4KiB"), Ok(4096));
    assert_eq!(parse_size("64MiB"), Ok(64 << 20));
    assert_eq!(parse_size("64mib"), Ok(64 << 20));
    assert_eq!(parse_size("1GiB"), Ok(1 << 30));
    assert_eq!(parse_size("1G"), Ok(1 << 30));
    assert_eq!(parse_size("100M"), Ok(100 << 20));
    assert_eq!(parse_size("5MB"), Ok(5_000_000));
    assert_eq!(parse_size("1_000"), Ok(1000));
    assert!(parse_size("").is_err());
    assert!(parse_size("12 parsecs").is_err());
    assert!(parse_size("-1").is_err());
    assert!(parse_size("99999999999TiB").is_err());
}

#[test]
fn nearest_rank_percentiles() {
    let v: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!(percentile(&v, 50.0), Some(50.0));
    assert_eq!(percentile(&v, 99.0), Some(99.0));
    assert_eq!(percentile(&v, 100.0), Some(100.0));
    assert_eq!(percentile(&v, 0.0), Some(1.0));
    let v = [3.0, 7.0, 9.0];
    assert_eq!(percentile(&v, 50.0), Some(7.0));
    assert_eq!(percentile(&v, 99.0), Some(9.0));
    assert_eq!(percentile(&[5.0], 99.0), Some(5.0));
    assert_eq!(percentile(&[], 50.0), None);
}

#[test]
fn payload_is_seekable_and_seeded() {
    let p = Payload::new(42);
    let mut whole = vec![0u8; 4099];
    p.fill(0, &mut whole);
    for (offset, len) in [
        (0usize, 1usize),
        (1, 7),
        (3, 8),
        (5, 100),
        (4093, 6),
        (8, 0),
    ] {
        let mut part = vec![0u8; len];
        p.fill(offset as u64, &mut part);
        assert_eq!(
            part,
            whole[offset..offset + len],
            "offset {offset} len {len}"
        );
    }
    let mut other = vec![0u8; 4099];
    Payload::new(43).fill(0, &mut other);
    assert_ne!(whole, other);
    // Not trivially repetitive.
    assert_ne!(whole[..8], whole[8..16]);
    // sha256 of a range equals sha256 of the bytes.
    use sha2::Digest;
    let direct: [u8; 32] = sha2::Sha256::digest(&whole[5..]).into();
    assert_eq!(p.sha256(5, 4094), direct);
}

#[tokio::test]
async fn payload_body_streams_the_range() {
    let p = Payload::new(7);
    let (offset, len) = (13u64, (FRAME * 2 + 1234) as u64);
    let body = p.body(offset, len);
    let got = body.collect().await.unwrap().to_bytes();
    let mut want = vec![0u8; len as usize];
    p.fill(offset, &mut want);
    assert_eq!(got.len() as u64, len);
    assert_eq!(&got[..], &want[..]);
}

#[test]
fn objects_keep_insertion_order() {
    let mut o = Obj::new();
    o.insert("scenario", serde_json::json!("big"));
    o.insert("bytes", serde_json::json!(1));
    o.insert("a\"b", serde_json::json!(null));
    o.insert("bytes", serde_json::json!(2));
    assert_eq!(o.to_string(), r#"{"scenario":"big","bytes":2,"a\"b":null}"#);
    let back: serde_json::Value = serde_json::from_str(&o.to_string()).unwrap();
    assert_eq!(back["bytes"], 2);
}

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    args: tusk_bench::BenchArgs,
}

#[test]
fn cli_defaults_match_the_brief() {
    use clap::{CommandFactory, Parser};
    Cli::command().debug_assert();
    let a = Cli::try_parse_from(["tusk-bench", BASE]).unwrap().args;
    assert_eq!(a.scenario, tusk_bench::Scenario::All);
    assert_eq!((a.big_size, a.big_chunk), (1 << 30, 64 << 20));
    assert_eq!(
        (a.small_count, a.small_size, a.concurrency),
        (2000, 4096, 32)
    );
    assert_eq!(
        (a.parallel_uploads, a.parallel_size, a.parallel_chunk),
        (16, 64 << 20, 8 << 20)
    );
    assert_eq!((a.resume_size, a.resume_cut), (256 << 20, 100 << 20));
    let a = Cli::try_parse_from([
        "tusk-bench",
        "--scenario",
        "small",
        "--big-size",
        "2MiB",
        BASE,
    ])
    .unwrap()
    .args;
    assert_eq!(
        (a.scenario, a.big_size),
        (tusk_bench::Scenario::Small, 2 << 20)
    );
    assert!(Cli::try_parse_from(["tusk-bench", "--scenario", "huge", BASE]).is_err());
}
