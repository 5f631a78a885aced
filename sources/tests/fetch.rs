//! `SourceStore::fetch` against real files, a real `curl` and a small HTTP
//! server on 127.0.0.1.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use strata_sources::{Checksum, Item, SourceError, SourceStore, SourceType, parse_item};

/// A store in a fresh temporary directory.
struct Store {
    dir: tempfile::TempDir,
    store: SourceStore,
}

impl Store {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SourceStore::new(&dir.path().join("sources"), &dir.path().join("tmp"));
        Self { dir, store }
    }

    /// Fails the test if any file (not directory) is under sources/ or tmp/.
    fn assert_no_files(&self) {
        for sub in ["sources", "tmp"] {
            let files = files_under(&self.dir.path().join(sub));
            assert!(files.is_empty(), "left behind: {files:?}");
        }
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn sum(data: &[u8]) -> Checksum {
    Checksum::of_bytes(data)
}

/// Serves fixed responses over HTTP/1.0 on 127.0.0.1 and counts requests.
struct Server {
    base: String,
    hits: Arc<AtomicUsize>,
}

enum Reply {
    Body(&'static [u8]),
    Redirect(&'static str),
    /// 503 for the first N requests, then the body.
    BusyThen(usize, &'static [u8]),
    /// The body only with `Authorization: Basic B64`, else 401.
    Basic(&'static str, &'static [u8]),
    /// Bytes without end and without a length.
    Endless,
}

impl Server {
    /// Unknown paths get 404. The accept thread is left running; it ends
    /// with the test process.
    fn start(routes: HashMap<&'static str, Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                // Drain the headers so curl sees a clean close.
                let mut line = String::new();
                let mut auth = String::new();
                while reader.read_line(&mut line).unwrap() > 2 {
                    if let Some(v) = line.strip_prefix("Authorization: ") {
                        auth = v.trim().to_owned();
                    }
                    line.clear();
                }
                let path = request_line.split_whitespace().nth(1).unwrap_or("");
                let served = counter.load(Ordering::SeqCst);
                let ok = |body: &'static [u8]| {
                    (
                        format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n", body.len()),
                        body,
                    )
                };
                let (head, body): (String, &[u8]) = match routes.get(path) {
                    Some(Reply::BusyThen(n, body)) if served > *n => ok(body),
                    Some(Reply::BusyThen(..)) => (
                        "HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n".to_owned(),
                        b"",
                    ),
                    Some(Reply::Basic(want, body)) if auth == format!("Basic {want}") => ok(body),
                    Some(Reply::Basic(..)) => (
                        "HTTP/1.0 401 Unauthorized\r\nContent-Length: 0\r\n".to_owned(),
                        b"",
                    ),
                    Some(Reply::Endless) => {
                        let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n");
                        let chunk = [b'z'; 64 << 10];
                        while stream.write_all(&chunk).is_ok() {}
                        continue;
                    }
                    Some(Reply::Body(body)) => (
                        format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n", body.len()),
                        body,
                    ),
                    Some(Reply::Redirect(to)) => (
                        format!("HTTP/1.0 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\n"),
                        b"",
                    ),
                    None => (
                        "HTTP/1.0 404 Not Found\r\nContent-Length: 9\r\n".to_owned(),
                        b"not found",
                    ),
                };
                let _ = stream.write_all(format!("{head}Connection: close\r\n\r\n").as_bytes());
                let _ = stream.write_all(body);
            }
        });
        Self { base, hits }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn curl(url: String) -> Item {
    Item::Curl {
        url,
        inline_user: None,
        secret: None,
        size: None,
    }
}

#[test]
fn inline_ok_then_cached() {
    let s = Store::new();
    let c = sum(b"hello\n");
    let (parsed, item) = parse_item(
        SourceType::Inline,
        c.as_str(),
        &json!({"encoding": "base64", "data": "aGVsbG8K"}),
    )
    .unwrap();
    assert_eq!(parsed, c);

    let fetched = s.store.fetch(SourceType::Inline, &c, &item).unwrap();
    assert!(!fetched.cached);
    assert_eq!(fetched.bytes, 6);
    assert_eq!(
        fetched.path,
        s.dir.path().join("sources/inline").join(c.as_str())
    );
    assert_eq!(fetched.path, s.store.path(SourceType::Inline, &c));
    assert_eq!(std::fs::read(&fetched.path).unwrap(), b"hello\n");
    let mode = std::fs::metadata(&fetched.path)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o444, "store files are read-only");
    assert!(s.store.contains(SourceType::Inline, &c));
    assert!(!s.store.contains(SourceType::Curl, &c));
    assert!(files_under(&s.dir.path().join("tmp")).is_empty());

    let again = s.store.fetch(SourceType::Inline, &c, &item).unwrap();
    assert!(again.cached);
    assert_eq!(again.bytes, 6);
}

#[test]
fn inline_bad_base64_is_rejected_at_parse() {
    let c = sum(b"x");
    let err = parse_item(
        SourceType::Inline,
        c.as_str(),
        &json!({"encoding": "base64", "data": "%%%"}),
    )
    .unwrap_err();
    assert!(matches!(err, SourceError::InvalidItem { .. }));
    assert!(
        err.to_string().starts_with(&format!(
            "source item {c} (inline): data is not valid base64"
        )),
        "{err}"
    );
}

#[test]
fn inline_mismatch_leaves_nothing() {
    let s = Store::new();
    let want = sum(b"expected");
    let item = Item::Inline {
        data: b"actual".to_vec(),
    };
    let err = s.store.fetch(SourceType::Inline, &want, &item).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "source item {want} (inline): checksum mismatch: expected {want}, got {}",
            sum(b"actual")
        )
    );
    assert!(!s.store.contains(SourceType::Inline, &want));
    s.assert_no_files();
}

#[test]
fn item_of_another_type_is_an_error() {
    let s = Store::new();
    let c = sum(b"x");
    let err = s
        .store
        .fetch(
            SourceType::Curl,
            &c,
            &Item::Inline {
                data: b"x".to_vec(),
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("is not of type curl"), "{err}");
    s.assert_no_files();
}

#[test]
fn concurrent_fetches_of_one_item_all_succeed() {
    let s = Store::new();
    let data = vec![7u8; 1 << 20];
    let c = sum(&data);
    let item = Item::Inline { data };
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| s.store.fetch(SourceType::Inline, &c, &item).unwrap()))
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap().bytes, 1 << 20);
        }
    });
    assert_eq!(files_under(&s.dir.path().join("sources")).len(), 1);
    assert!(files_under(&s.dir.path().join("tmp")).is_empty());
}

#[test]
fn curl_http_ok_then_cached_without_network() {
    let server = Server::start(HashMap::from([("/pkg.deb", Reply::Body(b"package bytes"))]));
    let s = Store::new();
    let c = sum(b"package bytes");
    let item = curl(server.url("/pkg.deb"));

    let fetched = s.store.fetch(SourceType::Curl, &c, &item).unwrap();
    assert!(!fetched.cached);
    assert_eq!(fetched.bytes, 13);
    assert_eq!(
        fetched.path,
        s.dir.path().join("sources/curl").join(c.as_str())
    );
    assert_eq!(std::fs::read(&fetched.path).unwrap(), b"package bytes");
    assert_eq!(server.hits(), 1);

    let again = s.store.fetch(SourceType::Curl, &c, &item).unwrap();
    assert!(again.cached);
    assert_eq!(again.bytes, 13);
    assert_eq!(server.hits(), 1, "a cached item must not touch the network");
    assert!(files_under(&s.dir.path().join("tmp")).is_empty());
}

#[test]
fn curl_follows_redirects() {
    let server = Server::start(HashMap::from([
        ("/old", Reply::Redirect("/new")),
        ("/new", Reply::Body(b"moved")),
    ]));
    let s = Store::new();
    let c = sum(b"moved");
    s.store
        .fetch(SourceType::Curl, &c, &curl(server.url("/old")))
        .unwrap();
    assert_eq!(server.hits(), 2);
}

#[test]
fn curl_404_names_item_url_and_curl_error() {
    let server = Server::start(HashMap::new());
    let s = Store::new();
    let c = sum(b"anything");
    let url = server.url("/missing.deb");
    let err = s
        .store
        .fetch(SourceType::Curl, &c, &curl(url.clone()))
        .unwrap_err();
    assert!(matches!(err, SourceError::Download { .. }));
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "source item {c} (curl): could not download {url}: curl: "
        )),
        "{msg}"
    );
    assert!(msg.contains("404"), "{msg}");
    assert!(!msg.contains('\n'), "one line: {msg:?}");
    s.assert_no_files();
}

#[test]
fn curl_mismatch_leaves_nothing() {
    let server = Server::start(HashMap::from([("/f", Reply::Body(b"tampered"))]));
    let s = Store::new();
    let want = sum(b"original");
    let err = s
        .store
        .fetch(SourceType::Curl, &want, &curl(server.url("/f")))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "source item {want} (curl): checksum mismatch: expected {want}, got {}",
            sum(b"tampered")
        )
    );
    s.assert_no_files();
}

#[test]
fn curl_unreachable_host_is_a_clear_error() {
    let s = Store::new();
    let c = sum(b"x");
    // Port 1 (tcpmux) is closed on any machine that runs these tests.
    let url = "http://127.0.0.1:1/x.deb".to_owned();
    let err = s
        .store
        .fetch(SourceType::Curl, &c, &curl(url.clone()))
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "source item {c} (curl): could not download {url}: curl: (7) "
        )),
        "{msg}"
    );
    s.assert_no_files();
}

#[test]
fn curl_file_url() {
    let s = Store::new();
    let outside = tempfile::tempdir().unwrap();
    let file = outside.path().join("local[1].txt");
    std::fs::write(&file, b"local data").unwrap();
    let c = sum(b"local data");
    let url = format!("file://{}", file.display());
    let (_, item) = parse_item(SourceType::Curl, c.as_str(), &json!({ "url": url })).unwrap();
    let fetched = s.store.fetch(SourceType::Curl, &c, &item).unwrap();
    assert_eq!(std::fs::read(&fetched.path).unwrap(), b"local data");

    let missing = format!("file://{}/nope", outside.path().display());
    let err = s
        .store
        .fetch(SourceType::Curl, &sum(b"y"), &curl(missing.clone()))
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "could not download {missing}: {}/nope: No such file",
            outside.path().display()
        )),
        "{err}"
    );
    assert!(files_under(&s.dir.path().join("tmp")).is_empty());
}

#[test]
fn a_busy_server_is_tried_again_with_back_off() {
    let s = Store::new();
    let server = Server::start(HashMap::from([("/busy", Reply::BusyThen(2, b"at last"))]));
    let c = sum(b"at last");
    let fetched = s
        .store
        .fetch(SourceType::Curl, &c, &curl(server.url("/busy")))
        .unwrap();
    assert_eq!(std::fs::read(&fetched.path).unwrap(), b"at last");
    assert_eq!(server.hits(), 3, "two 503s, then the body");
    // A 404 is not transient: one request only.
    let before = server.hits();
    s.store
        .fetch(SourceType::Curl, &sum(b"n"), &curl(server.url("/none")))
        .unwrap_err();
    assert_eq!(server.hits(), before + 1);
}

#[test]
fn an_item_larger_than_its_size_stops_and_leaves_nothing() {
    let s = Store::new();
    let server = Server::start(HashMap::from([
        ("/big", Reply::Body(b"0123456789")),
        ("/endless", Reply::Endless),
    ]));
    let c = sum(b"0123456789");
    let (_, item) = parse_item(
        SourceType::Curl,
        c.as_str(),
        &json!({"url": server.url("/big"), "size": 4}),
    )
    .unwrap();
    let err = s.store.fetch(SourceType::Curl, &c, &item).unwrap_err();
    assert!(
        err.to_string()
            .contains("larger than 4 bytes, the item's size"),
        "{err}"
    );
    // No length announced, no end: the cap stops it.
    let store = SourceStore::new(&s.dir.path().join("sources"), &s.dir.path().join("tmp"))
        .with_limits(strata_sources::Limits {
            max_bytes: 1 << 20,
            ..Default::default()
        });
    let err = store
        .fetch(SourceType::Curl, &c, &curl(server.url("/endless")))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("larger than 1048576 bytes, the default cap"),
        "{err}"
    );
    // A file:// device or FIFO is refused before a byte is read.
    let err = store
        .fetch(SourceType::Curl, &c, &curl("file:///dev/zero".into()))
        .unwrap_err();
    assert!(
        err.to_string().contains("/dev/zero: not a regular file"),
        "{err}"
    );
    s.assert_no_files();
}

#[test]
fn credentials_reach_the_server_but_no_message() {
    use strata_sources::{Secret, Secrets};
    let s = Store::new();
    // "bob:hunter22" in base64.
    let server = Server::start(HashMap::from([(
        "/private",
        Reply::Basic("Ym9iOmh1bnRlcjIy", b"private"),
    )]));
    let c = sum(b"private");
    let named = json!({"url": server.url("/private"), "secrets": {"name": "mirror"}});
    let (_, item) = parse_item(SourceType::Curl, c.as_str(), &named).unwrap();
    // Without the secret: a clear error naming it, not its value.
    let err = s.store.fetch(SourceType::Curl, &c, &item).unwrap_err();
    assert!(
        err.to_string().contains("needs the secret \"mirror\""),
        "{err}"
    );
    let secrets = Secrets::from_pairs([(
        "mirror".to_owned(),
        Secret::new("bob:hunter22".into()).unwrap(),
    )]);
    let store = SourceStore::new(&s.dir.path().join("sources"), &s.dir.path().join("tmp"))
        .with_secrets(secrets);
    store.fetch(SourceType::Curl, &c, &item).unwrap();
    // Inline credentials work too, and the error for a wrong one does not
    // show them.
    let inline = server
        .url("/private")
        .replace("http://", "http://bob:hunter22@");
    let (_, item) = parse_item(SourceType::Curl, sum(b"other").as_str(), &json!(inline)).unwrap();
    let err = s
        .store
        .fetch(SourceType::Curl, &sum(b"other"), &item)
        .unwrap_err();
    assert!(
        !format!("{err} {err:?} {item:?}").contains("hunter22"),
        "{err}"
    );
    let wrong = server
        .url("/private")
        .replace("http://", "http://bob:wrong-pass@");
    let (_, item) = parse_item(SourceType::Curl, c.as_str(), &json!(wrong)).unwrap();
    let err = Store::new()
        .store
        .fetch(SourceType::Curl, &c, &item)
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    assert!(!err.to_string().contains("wrong-pass"), "{err}");
}
