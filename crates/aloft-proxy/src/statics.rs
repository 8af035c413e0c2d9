//! `[[statics]]`: files of a machine's image served by the proxy itself, as Fly's proxy does —
//! `GET`/`HEAD` of a path under a rule's `url_prefix` is answered from `guest_path` inside the
//! root filesystem of a started machine of the app, without reaching the app.
//!
//! Files are opened with `openat2(RESOLVE_IN_ROOT)` on the machine's root directory, so `..`
//! and symbolic links (absolute ones included) resolve inside the image, never on the host.
//! Answers carry a content type from the file's extension, `ETag` (size and modification time)
//! and `Last-Modified`, and honour `If-None-Match` / `If-Modified-Since` with 304. A path that is
//! not a file there (no such file, a directory without `index_document`) goes to the app, as
//! any other request would.
//!
//! Deliberately different from Fly: the files are read from the running machine's root
//! filesystem (its image, plus what the machine wrote since it started), so a static is served
//! while a machine of the app runs; with none started, the request goes to the app (and may
//! autostart one). Files above [`MAX_FILE_BYTES`] go to the app too.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

/// Larger files are left to the app (they are read whole into memory here).
pub const MAX_FILE_BYTES: u64 = 32 << 20;

/// One `[[statics]]` entry of a port's app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticRule {
    /// URL path prefix, `/` separated, without a trailing `/` (`/assets`); `/` for everything.
    pub url_prefix: String,
    /// Directory in the image (`/app/public`).
    pub guest_path: String,
    /// File served for a directory (`index.html`), if any.
    pub index_document: Option<String>,
}

impl StaticRule {
    pub fn new(url_prefix: &str, guest_path: &str, index_document: Option<&str>) -> StaticRule {
        let prefix = url_prefix.trim_end_matches('/');
        StaticRule {
            url_prefix: if prefix.is_empty() {
                "/".into()
            } else if prefix.starts_with('/') {
                prefix.into()
            } else {
                format!("/{prefix}")
            },
            guest_path: guest_path.to_string(),
            index_document: index_document.filter(|d| !d.is_empty()).map(str::to_string),
        }
    }

    /// The path inside the image for a request path, if the rule covers it and it is clean
    /// (no `..`, `.` or empty segments, no NUL). Longest prefixes are tried first by the caller.
    pub fn guest_file(&self, path: &str) -> Option<PathBuf> {
        let rest = if self.url_prefix == "/" {
            path
        } else {
            let rest = path.strip_prefix(&self.url_prefix)?;
            if !(rest.is_empty() || rest.starts_with('/')) {
                return None;
            }
            rest
        };
        let mut file = PathBuf::from(&self.guest_path);
        for segment in rest.split('/').filter(|s| !s.is_empty()) {
            let segment = percent_decode(segment)?;
            if segment == ".." || segment == "." || segment.contains(['/', '\0']) {
                return None;
            }
            file.push(segment);
        }
        Some(file)
    }
}

/// Decodes `%XX` escapes; `None` for a malformed escape.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A file found for a request.
#[derive(Debug)]
pub struct StaticFile {
    pub body: Bytes,
    pub content_type: &'static str,
    pub etag: String,
    pub last_modified: SystemTime,
}

impl StaticFile {
    /// Whether the client's copy is current (`If-None-Match` wins over `If-Modified-Since`).
    pub fn not_modified(
        &self,
        if_none_match: Option<&str>,
        if_modified_since: Option<&str>,
    ) -> bool {
        if let Some(tags) = if_none_match {
            return tags
                .split(',')
                .map(|t| t.trim().trim_start_matches("W/"))
                .any(|t| t == "*" || t == self.etag);
        }
        if let Some(since) = if_modified_since.and_then(|s| httpdate::parse_http_date(s).ok()) {
            let modified = self
                .last_modified
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let since = since
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            return modified <= since;
        }
        false
    }
}

/// The file for `path` under the first matching rule (longest prefix first), read from `root`
/// (a machine's root filesystem). Blocking: call off the async threads.
pub fn find(rules: &[StaticRule], root: &Path, path: &str) -> Option<StaticFile> {
    let mut rules: Vec<&StaticRule> = rules.iter().collect();
    rules.sort_by_key(|r| std::cmp::Reverse(r.url_prefix.len()));
    for rule in rules {
        let Some(guest) = rule.guest_file(path) else {
            continue;
        };
        if let Some(file) = read(root, &guest, rule.index_document.as_deref()) {
            return Some(file);
        }
    }
    None
}

fn read(root: &Path, guest: &Path, index: Option<&str>) -> Option<StaticFile> {
    let mut file = open_in_root(root, guest)?;
    let mut meta = file.metadata().ok()?;
    let mut name = guest.to_path_buf();
    if meta.is_dir() {
        name = guest.join(index?);
        file = open_in_root(root, &name)?;
        meta = file.metadata().ok()?;
    }
    if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
        return None;
    }
    let mut body = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut body).ok()?;
    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let secs = meta.mtime().max(0) as u64;
    Some(StaticFile {
        body: Bytes::from(body),
        content_type: content_type(&name),
        etag: format!("\"{:x}-{:x}\"", meta.len(), secs),
        last_modified: SystemTime::UNIX_EPOCH
            + Duration::from_secs(
                modified
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            ),
    })
}

/// Opens `path` as if `root` were `/`: `..` and symbolic links cannot leave it.
fn open_in_root(root: &Path, path: &Path) -> Option<File> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
    let dir = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let rel = path.strip_prefix("/").unwrap_or(path);
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let fd = openat2(
        &dir,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .ok()?;
    Some(File::from(fd))
}

/// The content type of a file by its extension (`application/octet-stream` when unknown).
fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "csv" => "text/csv; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_map_clean_paths_only() {
        let r = StaticRule::new("/assets/", "/app/public", None);
        assert_eq!(r.url_prefix, "/assets");
        assert_eq!(
            r.guest_file("/assets/css/site.css"),
            Some(PathBuf::from("/app/public/css/site.css"))
        );
        assert_eq!(r.guest_file("/assets"), Some(PathBuf::from("/app/public")));
        assert_eq!(r.guest_file("/assetsX/a"), None);
        assert_eq!(r.guest_file("/assets/../etc/passwd"), None);
        assert_eq!(r.guest_file("/assets/%2e%2e/etc/passwd"), None);
        assert_eq!(r.guest_file("/assets/a%2Fb"), None);
        assert_eq!(r.guest_file("/assets/a%zz"), None);
        assert_eq!(
            r.guest_file("/assets/hello%20world.txt"),
            Some(PathBuf::from("/app/public/hello world.txt"))
        );
        let all = StaticRule::new("/", "/www", Some("index.html"));
        assert_eq!(all.guest_file("/x"), Some(PathBuf::from("/www/x")));
    }

    #[test]
    fn files_are_read_inside_the_root_only() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("www/docs")).unwrap();
        std::fs::write(root.join("www/site.css"), "body{}").unwrap();
        std::fs::write(root.join("www/docs/index.html"), "<h1>docs</h1>").unwrap();
        std::fs::write(t.path().join("secret"), "host secret").unwrap();
        std::os::unix::fs::symlink("/secret", root.join("www/abs-link")).unwrap();
        std::os::unix::fs::symlink("../../secret", root.join("www/rel-link")).unwrap();
        let rules = [StaticRule::new("/static", "/www", Some("index.html"))];
        let f = find(&rules, &root, "/static/site.css").unwrap();
        assert_eq!(&f.body[..], b"body{}");
        assert_eq!(f.content_type, "text/css; charset=utf-8");
        assert!(f.not_modified(Some(&f.etag), None));
        assert!(!f.not_modified(Some("\"other\""), None));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(60));
        assert!(f.not_modified(None, Some(&later)));
        assert!(!f.not_modified(None, Some("Thu, 01 Jan 1970 00:00:00 GMT")));
        let index = find(&rules, &root, "/static/docs").unwrap();
        assert_eq!(index.content_type, "text/html; charset=utf-8");
        // Links resolve inside the root: the host's file is never reached.
        assert!(find(&rules, &root, "/static/abs-link").is_none());
        assert!(find(&rules, &root, "/static/rel-link").is_none());
        assert!(find(&rules, &root, "/static/missing.txt").is_none());
        assert!(find(&rules, &root, "/other/site.css").is_none());
    }
}
