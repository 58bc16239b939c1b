//! Hostile input, proved on a real server on port 0 with the real models: every case of a generated corpus (broken
//! and bomb photos of each format, files that are not photos, malformed forms and JSON, non-finite numbers, odd
//! ids and paths, oversized heads, abusive connections) gets its documented status and code, the server keeps
//! answering `/healthz`, its memory stays bounded, and the gallery and its audit chain are left as they were. The
//! codes are documented in docs/api.md.

mod common;

use std::time::Duration;

use common::corpus::{
    card, encode, gif_screen, gif_thousand_frames, jpeg_absurd_exif, jpeg_cmyk, jpeg_declaring, png_header, png_uniform,
    png_uniform_bomb, tiff_deflate_bomb, tiff_header, webp_header, webp_uniform,
};
use common::TestServer;
use facematch::http::ServerConfig;
use image::{DynamicImage, ImageBuffer, ImageFormat, Rgb, RgbImage};
use reqwest::{Client, Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn face_photo() -> DynamicImage {
    let path = common::deepface().join("id01").join("img10.jpg");
    image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A real face tiled `n` x `n` times.
fn crowd(n: u32) -> Vec<u8> {
    let face = face_photo().resize(200, 290, image::imageops::FilterType::Triangle).to_rgb8();
    let (w, h) = face.dimensions();
    let mut canvas = RgbImage::from_pixel(w * n, h * n, Rgb([200, 200, 200]));
    for i in 0..n {
        for j in 0..n {
            image::imageops::replace(&mut canvas, &face, (i * w) as i64, (j * h) as i64);
        }
    }
    encode(&DynamicImage::ImageRgb8(canvas), ImageFormat::Jpeg)
}

// ---------------------------------------------------------------- the harness

struct Harness {
    server: TestServer,
    client: Client,
    /// Cases answered with another status or code than documented: all of them are listed at the end.
    wrong: std::sync::Mutex<Vec<String>>,
}

impl Harness {
    fn new(server: TestServer, client: Client) -> Harness {
        Harness { server, client, wrong: Default::default() }
    }

    /// Fails with every case that got another answer than documented.
    fn finish(&self) {
        let wrong = self.wrong.lock().unwrap();
        assert!(wrong.is_empty(), "{} cases answered otherwise than documented:\n{}", wrong.len(), wrong.join("\n"));
    }

    /// A request to `path` with the key of a role that may use it and a stated purpose.
    fn to(&self, method: Method, path: &str) -> RequestBuilder {
        let key = self.server.key(common::role_for(&method, path));
        self.client.request(method, self.server.url(path)).bearer_auth(key).header("x-facematch-purpose", "hostile test")
    }

    fn photo(&self, name: &str, bytes: Vec<u8>) -> RequestBuilder {
        let part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_string());
        self.to(Method::POST, "/v1/search").multipart(reqwest::multipart::Form::new().part("photo", part))
    }

    fn form(&self, fields: &[(&str, &str)]) -> RequestBuilder {
        let mut form = reqwest::multipart::Form::new().part(
            "photo",
            reqwest::multipart::Part::bytes(encode(&face_photo(), ImageFormat::Jpeg)).file_name("face.jpg"),
        );
        for (name, value) in fields {
            form = form.text(name.to_string(), value.to_string());
        }
        self.to(Method::POST, "/v1/search").multipart(form)
    }

    fn json(&self, path: &str, body: String) -> RequestBuilder {
        self.to(Method::POST, path).header("content-type", "application/json").body(body)
    }

    /// Sends a case and checks its status and code, then that the server still answers.
    async fn expect(&self, case: &str, request: RequestBuilder, status: u16, code: &str) -> Value {
        let response = request.send().await.unwrap_or_else(|e| panic!("{case}: no answer: {e}"));
        let got = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        assert!(got < 400 || text.len() < 2048, "{case}: an error of {} bytes", text.len());
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{case}: {got}: not JSON ({e}): {text:.200}"));
        if got != status || (status >= 400 && body["error"]["code"] != code) {
            self.wrong.lock().unwrap().push(format!("{case}: expected {status} {code}, got {got} {body:.300}"));
        }
        if got >= 400 {
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(!message.is_empty() && message.chars().count() <= 301, "{case}: message of {} chars", message.len());
        }
        self.healthy(case).await;
        body
    }

    async fn healthy(&self, after: &str) {
        let r = self.to(Method::GET, "/healthz").send().await.unwrap_or_else(|e| panic!("after {after}: {e}"));
        assert_eq!(r.status(), StatusCode::OK, "after {after}");
    }

    fn addr(&self) -> String {
        self.server.base.trim_start_matches("http://").to_string()
    }
}

/// Sends raw bytes on a fresh connection and reads the answer's head and body (until close or a complete body).
async fn raw(addr: &str, request: &[u8]) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_answer(&mut stream).await
}

async fn read_answer(stream: &mut TcpStream) -> (u16, String, String) {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 8192];
    // A bound on the test's own wait, not an assertion about speed: a server that never answers fails here.
    let read = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let n = stream.read(&mut buffer).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buffer[..n]);
            if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&seen[..end]).to_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)));
                if length.is_some_and(|n| seen.len() >= end + 4 + n) {
                    break;
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within the test's bound");
    let text = String::from_utf8_lossy(&seen).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_lowercase(), body.to_string())
}

/// Peak and current resident memory of this process (the server runs in it), bytes.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()).unwrap_or(0)
            * 1024
    };
    (field("VmHWM:"), field("VmRSS:"))
}

async fn gallery_state(h: &Harness) -> (Value, i64, i64) {
    let stats: Value = h.to(Method::GET, "/v1/stats").send().await.unwrap().json().await.unwrap();
    let data_dir = h.server.data_dir.display().to_string();
    assert!(!stats.to_string().contains(&data_dir), "stats show a server path: {stats}");
    let audit: Value = h.to(Method::GET, "/v1/audit?per_page=200")
        
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let verdict: Value = h.to(Method::GET, "/v1/audit/verify").send().await.unwrap().json().await.unwrap();
    assert_eq!(verdict["status"], "intact", "{verdict}");
    let newest = audit["items"].as_array().unwrap().iter().filter_map(|r| r["id"].as_i64()).max().unwrap_or(0);
    // What the gallery holds; the count of audit entries grows with every answered search, checked apart.
    let mut gallery = stats["gallery"].clone();
    gallery.as_object_mut().unwrap().remove("audit_entries");
    (gallery, audit["total"].as_i64().unwrap(), newest)
}

const MIB: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_input_gets_its_code_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), ServerConfig { max_body_bytes: 30 << 20, ..ServerConfig::default() });
    let h = Harness::new(server, Client::new());

    // A gallery to protect: one watchlist, one subject, one enrolled face.
    let r = h.json("/v1/watchlists", json!({ "name": "wanted" }).to_string()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = h.json("/v1/subjects", json!({ "watchlist": "wanted", "display_name": "A" }).to_string()).send().await.unwrap();
    let subject = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let enrol = reqwest::multipart::Form::new()
        .part("photo", reqwest::multipart::Part::bytes(encode(&face_photo(), ImageFormat::Jpeg)).file_name("a.jpg"));
    let r = h.to(Method::POST, &format!("/v1/subjects/{subject}/faces")).multipart(enrol).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
    h.expect("warm-up search", h.photo("face.jpg", encode(&face_photo(), ImageFormat::Jpeg)), 200, "").await;
    let (gallery_before, _, newest_before) = gallery_state(&h).await;
    let (peak_before, _) = memory();

    // Photos that are broken: every supported format cut short, and the degenerate ones.
    for (format, name, code) in [
        (ImageFormat::Jpeg, "cut.jpg", "corrupt_photo"),
        (ImageFormat::Png, "cut.png", "corrupt_photo"),
        (ImageFormat::WebP, "cut.webp", "corrupt_photo"),
        (ImageFormat::Bmp, "cut.bmp", "corrupt_photo"),
        (ImageFormat::Gif, "cut.gif", "corrupt_photo"),
        (ImageFormat::Tiff, "cut.tiff", "corrupt_photo"),
    ] {
        let whole = encode(&card(), format);
        for cut in [whole.len() / 2, 40.min(whole.len() - 1)] {
            h.expect(&format!("{name} cut at {cut}"), h.photo(name, whole[..cut].to_vec()), 422, code).await;
        }
    }
    h.expect("zero bytes", h.photo("empty.jpg", Vec::new()), 422, "empty_photo").await;
    h.expect("26 MiB photo", h.photo("big.jpg", vec![0xFF; 26 << 20]), 413, "photo_too_large").await;
    let one = DynamicImage::ImageRgb8(ImageBuffer::from_pixel(1, 1, Rgb([1, 2, 3])));
    h.expect("1x1", h.photo("one.png", encode(&one, ImageFormat::Png)), 422, "photo_too_small").await;

    // Headers that declare too much: refused before a pixel is decoded.
    h.expect("png 60000x60000", h.photo("a.png", png_header(60_000, 60_000)), 422, "photo_too_many_pixels").await;
    h.expect("png 100000x1", h.photo("a.png", png_header(100_000, 1)), 422, "photo_too_many_pixels").await;
    let mostly_uniform = png_uniform(20_000, 20_000);
    assert!(mostly_uniform.len() < 2 << 20, "the 20000² PNG is {} bytes", mostly_uniform.len());
    h.expect("mostly uniform png 20000x20000", h.photo("a.png", mostly_uniform), 422, "photo_too_many_pixels").await;
    h.expect("tiff bomb 12000x12000", h.photo("a.tif", tiff_deflate_bomb(12_000, 12_000)), 422, "photo_too_many_pixels").await;
    h.expect("jpeg 60000x60000", h.photo("a.jpg", jpeg_declaring(60_000, 60_000)), 422, "photo_too_many_pixels").await;
    h.expect("tiff 60000x60000", h.photo("a.tif", tiff_header(60_000, 60_000)), 422, "photo_too_many_pixels").await;
    h.expect("webp 16000x16000", h.photo("a.webp", webp_header(16_000, 16_000)), 422, "photo_too_many_pixels").await;
    // The WebP decoder reads a side of 16384, the format's largest, as 0: refused all the same, as too small.
    h.expect("webp 16384x16384", h.photo("a.webp", webp_header(16_384, 16_384)), 422, "photo_too_small").await;
    h.expect("gif screen 65535x65535", h.photo("a.gif", gif_screen(u16::MAX, u16::MAX)), 422, "photo_too_many_pixels").await;
    // 10000x8000 = 80 megapixels is within the pixel limit, but its RGBA canvas and RGB copy are not within the
    // decode budget.
    h.expect("gif screen 10000x8000 (36 bytes)", h.photo("a.gif", gif_screen(10_000, 8_000)), 422, "photo_too_many_pixels").await;

    // Bombs within the limits decode within the budget: a uniform 64-megapixel PNG and TIFF, a 16-megapixel WebP
    // and GIF screen, a thousand-frame GIF (only its first frame is decoded). None has a face: an answer with none.
    let bomb = png_uniform_bomb();
    assert!(bomb.len() < 2 << 20, "the bomb is {} bytes", bomb.len());
    let tiff = tiff_deflate_bomb(8000, 8000);
    let webp = webp_uniform(4000, 4000);
    for (name, bytes) in [("bomb.png", bomb.clone()), ("bomb.tif", tiff), ("bomb.webp", webp), ("bomb.gif", gif_screen(4000, 4000))] {
        assert!(bytes.len() < 2 << 20, "{name} is {} bytes", bytes.len());
        let body = h.expect(name, h.photo(name, bytes), 200, "").await;
        assert_eq!(body["faces"], json!([]), "{name}");
    }
    let frames = gif_thousand_frames();
    let body = h.expect("thousand-frame gif", h.photo("frames.gif", frames), 200, "").await;
    assert_eq!(body["faces"], json!([]));
    let body = h.expect("absurd exif", h.photo("exif.jpg", jpeg_absurd_exif()), 200, "").await;
    assert_eq!(body["faces"], json!([]));

    // Colour types: 16-bit, alpha, grey, grey with alpha, and palette-free BMP of a real face all find it.
    let face = face_photo();
    for (name, image, format) in [
        ("face16.png", DynamicImage::ImageRgb16(face.to_rgb16()), ImageFormat::Png),
        ("face-alpha.png", DynamicImage::ImageRgba8(face.to_rgba8()), ImageFormat::Png),
        ("face-grey.png", DynamicImage::ImageLuma8(face.to_luma8()), ImageFormat::Png),
        ("face-grey-alpha.png", DynamicImage::ImageLumaA8(face.to_luma_alpha8()), ImageFormat::Png),
        ("face-grey16.tiff", DynamicImage::ImageLuma16(face.to_luma16()), ImageFormat::Tiff),
        ("face.bmp", DynamicImage::ImageRgb8(face.to_rgb8()), ImageFormat::Bmp),
        ("face.webp", DynamicImage::ImageRgba8(face.to_rgba8()), ImageFormat::WebP),
    ] {
        let body = h.expect(name, h.photo(name, encode(&image, format)), 200, "").await;
        assert_eq!(body["faces"].as_array().map(Vec::len), Some(1), "{name}: {body}");
    }
    let body = h.expect("cmyk jpeg", h.photo("cmyk.jpg", jpeg_cmyk(&face)), 200, "").await;
    assert_eq!(body["faces"].as_array().map(Vec::len), Some(1), "cmyk: {body}");

    // Not photos, whatever their name says.
    for (name, bytes) in [
        ("svg.jpg", br#"<svg xmlns="http://www.w3.org/2000/svg" width="9000" height="9000"><rect/></svg>"#.to_vec()),
        ("pdf.jpg", b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF".to_vec()),
        ("heic.jpg", b"\0\0\0\x18ftypheic\0\0\0\0mif1heic\0\0\0\x08free".to_vec()),
        ("html.jpg", b"<!doctype html><script>alert(1)</script>".to_vec()),
        ("zip.jpg", b"PK\x03\x04\x14\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x01\0\0\0a".to_vec()),
        ("text.jpg", b"hello, this is not an image".to_vec()),
    ] {
        h.expect(name, h.photo(name, bytes), 415, "unsupported_format").await;
    }
    // Polyglots: a real photo with a zip, or a script, after its end is still that photo.
    let mut polyglot = encode(&face, ImageFormat::Jpeg);
    polyglot.extend_from_slice(b"PK\x03\x04<script>alert(1)</script>");
    let body = h.expect("jpeg+zip polyglot", h.photo("p.jpg", polyglot), 200, "").await;
    assert_eq!(body["faces"].as_array().map(Vec::len), Some(1), "{body}");
    let mut gifhtml = gif_screen(64, 64);
    gifhtml.extend_from_slice(b"<html><script>alert(1)</script></html>");
    h.expect("gif+html polyglot", h.photo("p.gif", gifhtml), 200, "").await;

    // Malformed forms.
    let multipart = |body: &'static [u8], content_type: &str| {
        h.to(Method::POST, "/v1/search").header("content-type", content_type.to_string()).body(body)
    };
    h.expect("multipart without boundary", multipart(b"--x\r\n", "multipart/form-data"), 400, "invalid_multipart").await;
    h.expect(
        "multipart never closed",
        multipart(b"--x\r\ncontent-disposition: form-data; name=\"photo\"; filename=\"a\"\r\n\r\nabc", "multipart/form-data; boundary=x"),
        400,
        "invalid_multipart",
    )
    .await;
    h.expect(
        "multipart part without a name",
        multipart(b"--x\r\ncontent-type: text/plain\r\n\r\nabc\r\n--x--\r\n", "multipart/form-data; boundary=x"),
        400,
        "missing_photo",
    )
    .await;
    h.expect("form as text/plain", multipart(b"photo=1", "text/plain"), 415, "expected_multipart").await;

    // Numbers that are not finite, or out of range, in every kind of field.
    for (field, value) in [("min_face_px", "NaN"), ("min_face_px", "inf"), ("min_face_px", "-infinity"), ("min_face_px", "-5"), ("min_quality", "NaN"), ("min_quality", "2"), ("k", "1e3"), ("k", "-1")] {
        h.expect(&format!("{field}={value}"), h.form(&[(field, value)]), 400, "invalid_field").await;
    }
    let dimension = 256;
    let search = |embedding: String| h.json("/v1/search", format!(r#"{{"mode":"investigation","embedding":{embedding}}}"#));
    h.expect("embedding NaN", search(format!("[NaN{}]", ",0".repeat(dimension - 1))), 400, "invalid_json").await;
    h.expect("embedding Infinity", search(format!("[Infinity{}]", ",0".repeat(dimension - 1))), 400, "invalid_json").await;
    // A number beyond f32 is refused by the parser, as infinity would be.
    h.expect("embedding 1e39", search(format!("[1e39{}]", ",0".repeat(dimension - 1))), 400, "invalid_json").await;
    h.expect("embedding zeros", search(format!("[0{}]", ",0".repeat(dimension - 1))), 422, "invalid_embedding").await;
    h.expect("embedding of 3", search("[1,2,3]".into()), 422, "dimension_mismatch").await;
    h.expect("embedding of strings", search(format!("[\"{}\"]", "x".repeat(1 << 20))), 400, "invalid_json").await;
    h.expect("embedding form NaN", h.form(&[("embedding", "[NaN]")]), 400, "invalid_json").await;
    let options = format!(r#"{{"embedding":[1{}],"min_face_px":1e39}}"#, ",0".repeat(dimension - 1));
    h.expect("json min_face_px 1e39", h.json("/v1/search", options), 400, "invalid_field").await;
    h.expect("watchlist alert_fpir 1e999", h.json("/v1/watchlists", r#"{"name":"x","alert_fpir":1e999}"#.into()), 400, "invalid_json").await;

    // JSON that is huge, deep, or not JSON at all.
    let huge_name = "n".repeat(20 << 20);
    let body = h
        .expect("20 MB display name", h.json("/v1/subjects", json!({ "watchlist": "wanted", "display_name": huge_name }).to_string()), 422, "invalid_display_name")
        .await;
    assert!(body.to_string().len() < 1024, "the error echoes its input: {body}");
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    h.expect("100,000 nested arrays", h.json("/v1/watchlists", deep), 400, "invalid_json").await;
    let body = h.expect("5 MB unknown field", h.json("/v1/watchlists", format!(r#"{{"{}":1}}"#, "f".repeat(5 << 20))), 400, "invalid_json").await;
    assert!(body.to_string().len() < 1024, "the error echoes its input: {body}");
    let body = h.expect("5 MB wrong type", h.json("/v1/watchlists", format!(r#"{{"name":["{}"]}}"#, "v".repeat(5 << 20))), 400, "invalid_json").await;
    assert!(body.to_string().len() < 1024, "{body}");
    let text_plain = h.to(Method::POST, "/v1/watchlists").header("content-type", "text/plain").body(r#"{"name":"csrf"}"#);
    h.expect("json as text/plain (cross-site form)", text_plain, 415, "expected_json").await;
    let no_type = h.to(Method::POST, "/v1/subjects").body(r#"{"watchlist":"wanted","display_name":"B"}"#);
    h.expect("json without a content type", no_type, 415, "expected_json").await;

    // Odd ids, paths and query strings.
    let get = |path: &str| h.to(Method::GET, path);
    h.expect("id not a number", get("/v1/subjects/abc"), 400, "invalid_id").await;
    h.expect("id past i64", get("/v1/subjects/99999999999999999999999"), 400, "invalid_id").await;
    h.expect("negative id", get("/v1/subjects/-1"), 404, "subject_not_found").await;
    h.expect("id with a NUL", get("/v1/subjects/%00"), 400, "invalid_id").await;
    let body = h.expect("id of 5000 chars", get(&format!("/v1/subjects/{}", "9a".repeat(2500))), 400, "invalid_id").await;
    assert!(body.to_string().len() < 512, "{body}");
    h.expect("traversal", get("/v1/../../etc/passwd"), 404, "route_not_found").await;
    h.expect("encoded traversal", get("/v1/subjects/..%2F..%2Fetc%2Fpasswd"), 400, "invalid_id").await;
    for query in ["page=0", "page=-1", "per_page=0", "page=NaN", "per_page=1e3", "page=99999999999999999999999"] {
        h.expect(query, get(&format!("/v1/subjects?{query}")), 400, "invalid_query").await;
        h.expect(query, get(&format!("/v1/audit?{query}")), 400, "invalid_query").await;
    }

    // Oversized heads, in the JSON shape up to hyper's own bounds.
    h.expect("uri of 20 KB", get(&format!("/v1/subjects?q={}", "q".repeat(20 << 10))), 414, "uri_too_long").await;
    let mut many = get("/healthz");
    for i in 0..150 {
        many = many.header(format!("x-h{i}"), "1");
    }
    h.expect("150 headers", many, 431, "headers_too_large").await;
    h.expect("a 100 KB header", get("/healthz").header("x-big", "b".repeat(100 << 10)), 431, "headers_too_large").await;

    // Browsers of other origins.
    let evil = "https://evil.example";
    h.expect("cross-origin post", h.json("/v1/watchlists", r#"{"name":"evil"}"#.into()).header("origin", evil), 403, "origin_not_allowed").await;
    let preflight = h
        .client
        .request(reqwest::Method::OPTIONS, h.server.url("/v1/watchlists"))
        .header("origin", evil)
        .header("access-control-request-method", "POST");
    h.expect("preflight", preflight, 403, "origin_not_allowed").await;
    let r = get("/healthz").send().await.unwrap();
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("cache-control", "no-store"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
    ] {
        assert_eq!(r.headers().get(name).and_then(|v| v.to_str().ok()), Some(value), "{name}");
    }
    assert!(r.headers().get("content-security-policy").is_some());
    assert!(r.headers().get("access-control-allow-origin").is_none());

    // Bodies that are declared too large: refused before any is read, and before `100 Continue`.
    let addr = h.addr();
    let (status, head, body) = raw(
        &addr,
        b"POST /v1/search HTTP/1.1\r\nhost: x\r\ncontent-type: multipart/form-data; boundary=x\r\ncontent-length: 40000000\r\nexpect: 100-continue\r\n\r\n",
    )
    .await;
    assert_eq!(status, 413, "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(!head.contains("100 continue"), "{head}");
    assert!(body.contains("request_too_large"), "{body}");
    let (status, _, body) = raw(
        &addr,
        b"POST /v1/watchlists HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000000000000\r\n\r\n{\"na",
    )
    .await;
    assert_eq!(status, 413);
    assert!(body.contains("request_too_large"), "{body}");
    let (status, head, body) = raw(&addr, format!("GET /v1/subjects?q={} HTTP/1.1\r\nhost: x\r\n\r\n", "q".repeat(70_000)).as_bytes()).await;
    // Past hyper's own bound (64 KiB) the refusal is hyper's, with no body: documented in docs/api.md.
    assert_eq!(status, 414, "{head}");
    assert!(body.is_empty());
    let headers: String = (0..450).map(|i| format!("x-h{i}: 1\r\n")).collect();
    let (status, head, body) = raw(&addr, format!("GET /healthz HTTP/1.1\r\nhost: x\r\n{headers}\r\n").as_bytes()).await;
    // So is a head of more than four times `max_headers` headers.
    assert_eq!(status, 431, "{head}");
    assert!(body.is_empty());
    // A chunked body, which declares no length, is refused once it grows past the limit (30 MiB here).
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"POST /v1/watchlists HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let chunk = [format!("{:x}\r\n", 1 << 20).into_bytes(), vec![b' '; 1 << 20], b"\r\n".to_vec()].concat();
    for _ in 0..32 {
        if stream.write_all(&chunk).await.is_err() {
            break; // the server may close once it has answered
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let (status, head, body) = read_answer(&mut stream).await;
    assert_eq!(status, 413, "{head}");
    assert!(body.contains("request_too_large"), "{body}");
    h.healthy("raw requests").await;

    // Many bombs at once: the decode budget makes them wait for each other instead of adding up.
    let mut running = Vec::new();
    for _ in 0..12 {
        running.push(h.photo("bomb.png", bomb.clone()).send());
    }
    for answer in futures_util::future::join_all(running).await {
        let status = answer.unwrap().status().as_u16();
        assert!(status == 200 || status == 503, "concurrent bomb: {status}");
    }
    h.healthy("concurrent bombs").await;

    let (peak_after, _) = memory();
    let growth = peak_after.saturating_sub(peak_before);
    eprintln!("peak resident memory {} MiB before the corpus, {} MiB after", peak_before / MIB, peak_after / MIB);
    assert!(growth < 1536 * MIB, "peak memory grew by {} MiB", growth / MIB);

    // Nothing changed, and the only new audit entries are the searches that were answered.
    let (gallery_after, _, _) = gallery_state(&h).await;
    assert_eq!(gallery_after, gallery_before);
    let audit: Value = get("/v1/audit?per_page=200").send().await.unwrap().json().await.unwrap();
    for record in audit["items"].as_array().unwrap() {
        if record["id"].as_i64().unwrap() > newest_before {
            assert_eq!(record["action"], "search", "{record}");
        }
    }
    h.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crowd_photo_is_answered_for_its_largest_faces() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), ServerConfig::default());
    let h = Harness::new(server, Client::new());
    // A gallery of 150 subjects, so that every face of the crowd has 150 candidates: 50 faces of 150 ids each are
    // more than an audit entry's details may hold.
    let r = h.json("/v1/watchlists", json!({ "name": "wanted" }).to_string()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let face = face_photo();
    for i in 0..150u32 {
        let r = h.json("/v1/subjects", json!({ "watchlist": "wanted", "display_name": format!("S{i}") }).to_string()).send().await.unwrap();
        let subject = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
        // The same face, cropped a little differently each time: another photo each time.
        let (w, h_) = (face.width(), face.height());
        let cropped = face.crop_imm(i % 15, i / 15, w - 15, h_ - 15);
        let part = reqwest::multipart::Part::bytes(encode(&cropped, ImageFormat::Jpeg)).file_name("a.jpg");
        let r = h.to(Method::POST, &format!("/v1/subjects/{subject}/faces"))
            .multipart(reqwest::multipart::Form::new().part("photo", part))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
    }
    let form = reqwest::multipart::Form::new()
        .part("photo", reqwest::multipart::Part::bytes(crowd(9)).file_name("crowd.jpg"))
        .text("mode", "investigation")
        .text("k", "200");
    let body = h.expect("81 faces", h.to(Method::POST, "/v1/search").multipart(form), 200, "").await;
    let faces = body["faces"].as_array().unwrap().len();
    assert_eq!(faces, 50, "{}", body["faces_detected"]);
    assert!(body["faces_detected"].as_u64().unwrap() > 50, "{}", body["faces_detected"]);
    assert_eq!(body["faces_truncated"], true);
    // Its audit entry is the search's, summarised to fit: 50 faces of 200 candidates do not.
    let audit: Value = h.to(Method::GET, "/v1/audit?per_page=1").send().await.unwrap().json().await.unwrap();
    let entry = &audit["items"][0];
    assert_eq!(entry["action"], "search", "{entry}");
    assert_eq!(entry["details"]["faces"], 50, "{entry}");
    assert_eq!(entry["details"]["truncated"], true, "{entry}");
    assert_eq!(entry["details"]["candidates_total"], 50 * 150, "{entry}");
    let verdict: Value = h.to(Method::GET, "/v1/audit/verify").send().await.unwrap().json().await.unwrap();
    assert_eq!(verdict["status"], "intact");
    h.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_idle_and_surplus_connections_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig { body_timeout_s: 1, idle_timeout_s: 1, header_timeout_s: 1, ..ServerConfig::default() };
    let server = TestServer::start(dir.path(), config);
    let h = Harness::new(server, Client::new());
    let addr = h.addr();

    // A body that stops arriving gets 408 on a closing connection (with a key: without one, the answer is 401 at once).
    let admin = h.server.key(facematch::service::Role::Admin);
    let (status, head, body) = raw(
        &addr,
        format!("POST /v1/watchlists HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {admin}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"name\":").as_bytes(),
    )
    .await;
    assert_eq!(status, 408, "{head}");
    assert!(body.contains("body_timeout"), "{body}");
    // So does a photo upload that declares 20 MB, within the limit, and sends a few bytes of it.
    let investigator = h.server.key(facematch::service::Role::Investigator);
    let (status, head, body) = raw(
        &addr,
        format!("POST /v1/search HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {investigator}\r\ncontent-type: multipart/form-data; boundary=x\r\ncontent-length: 20000000\r\n\r\n--x\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status, 408, "{head}");
    assert!(head.contains("connection: close") && body.contains("body_timeout"), "{head}\n{body}");

    // A head that never ends, and a connection that says nothing, are closed.
    for opening in [&b"GET /healthz HTTP/1.1\r\nhost: x\r\n"[..], &b""[..]] {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream.write_all(opening).await.unwrap();
        let mut buffer = [0u8; 1024];
        let closed = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the server kept a silent connection open");
    }

    h.healthy("slow clients").await;
    h.server.stop();

    // Past the cap, a new connection is answered 503 at once; once the others go, service resumes.
    let dir = tempfile::tempdir().unwrap();
    let review = "https://review.example.org";
    let config = ServerConfig { max_connections: 6, cors_origins: vec![review.to_string()], ..ServerConfig::default() };
    let server = TestServer::start(dir.path(), config);
    let h = Harness::new(server, Client::builder().pool_max_idle_per_host(0).build().unwrap());
    let addr = h.addr();

    // (A listed browser origin may call the API: its preflight and its request are allowed, and say so.)
    let preflight = h
        .client
        .request(reqwest::Method::OPTIONS, h.server.url("/v1/watchlists"))
        .header("origin", review)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
    assert_eq!(preflight.headers()["access-control-allow-origin"], review);
    // Its key travels as a bearer token: the preflight must allow the header.
    let allowed_headers = preflight.headers()["access-control-allow-headers"].to_str().unwrap();
    assert!(allowed_headers.split(", ").any(|h| h == "authorization"), "{allowed_headers}");
    let created = h.json("/v1/watchlists", r#"{"name":"reviewed"}"#.into()).header("origin", review).send().await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(created.headers()["access-control-allow-origin"], review);
    h.expect("unlisted origin", h.to(Method::GET, "/v1/stats").header("origin", "https://evil.example"), 403, "origin_not_allowed").await;

    let mut held = Vec::new();
    for _ in 0..6 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        // A request in flight keeps each connection busy: a body that is still coming.
        stream
            .write_all(b"POST /v1/watchlists HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 10\r\n\r\n{")
            .await
            .unwrap();
        held.push(stream);
    }
    // The held connections are counted once the server has accepted them: wait until a new one is refused.
    let refused = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let (status, head, body) = raw(&addr, b"GET /readyz HTTP/1.1\r\nhost: x\r\n\r\n").await;
            if status == 503 {
                return (head, body);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let (head, body) = refused.expect("a connection over the cap is refused");
    assert!(body.contains("too_many_connections"), "{body}");
    assert!(head.contains("x-content-type-options: nosniff") && head.contains("retry-after: 1"), "{head}");
    // Liveness is answered all the same: the process is alive, only busy.
    let (status, head, body) = raw(&addr, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(body, r#"{"status":"ok"}"#);
    drop(held);
    let healthy = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Ok(r) = h.to(Method::GET, "/healthz").send().await {
                if r.status() == StatusCode::OK {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(healthy.is_ok(), "service did not resume after the connections closed");
    h.finish();
}
