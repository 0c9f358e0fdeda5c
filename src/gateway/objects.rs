//! Reading a directory of manifests as `kubectl apply -f DIR` takes them: every `.yaml`,
//! `.yml` and `.json` file at its top level (hidden ones, like a mounted ConfigMap's
//! `..data`, skipped), each split into its `---` documents, each document parsed into the
//! Gateway API or core type its `kind` names. Every object remembers where it was written,
//! so a problem found later still names `file:line`.

use std::fmt;
use std::path::{Path, PathBuf};

use gateway_api::experimental::tcproutes::TcpRoute;
use gateway_api::gatewayclasses::GatewayClass;
use gateway_api::gateways::Gateway;
use gateway_api::grpcroutes::GrpcRoute;
use gateway_api::httproutes::HttpRoute;
use gateway_api::referencegrants::ReferenceGrant;
use gateway_api::tlsroutes::TlsRoute;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;

/// The API group of the Gateway API kinds.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// The namespace of an object that names none (kubectl's default).
pub const DEFAULT_NAMESPACE: &str = "default";

/// Where an object was written, and which object it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    /// 1-based line of the document's first line.
    pub line: usize,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Objects read from the API server have no file (line 0).
        if self.line > 0 {
            write!(f, "{}:{}: ", self.file.display(), self.line)?;
        }
        match (self.kind.is_empty(), self.name.is_empty()) {
            (true, _) => write!(f, "document"),
            (false, true) => write!(f, "{}", self.kind),
            (false, false) => write!(f, "{} {}/{}", self.kind, self.namespace, self.name),
        }
    }
}

/// An object and where it came from.
#[derive(Debug, Clone)]
pub struct Located<T> {
    pub at: Origin,
    pub obj: T,
}

/// Everything of use read from the directory.
#[derive(Debug, Default)]
pub struct Objects {
    pub classes: Vec<Located<GatewayClass>>,
    pub gateways: Vec<Located<Gateway>>,
    pub routes: Vec<Located<HttpRoute>>,
    pub grpc_routes: Vec<Located<GrpcRoute>>,
    pub tls_routes: Vec<Located<TlsRoute>>,
    /// Experimental channel (`--gateway-experimental`).
    pub tcp_routes: Vec<Located<TcpRoute>>,
    pub grants: Vec<Located<ReferenceGrant>>,
    pub services: Vec<Located<Service>>,
    pub slices: Vec<Located<EndpointSlice>>,
    /// TLS Secrets (`kubernetes.io/tls`) HTTPS listeners name.
    pub secrets: Vec<Located<Secret>>,
    /// XXH3 over every file's name and bytes: identifies what was read.
    pub digest: u64,
}

/// A document veer could not use: it is left out, the rest still applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub at: Origin,
    /// The Gateway API condition reason it maps to (`UnsupportedValue`, `BackendNotFound`, …).
    pub reason: &'static str,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// The fields every manifest starts with; read first to choose the type.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Header {
    api_version: Option<String>,
    kind: Option<String>,
    metadata: Option<HeaderMeta>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct HeaderMeta {
    name: Option<String>,
    namespace: Option<String>,
}

/// Reads every manifest of `dir`. A file that cannot be read fails the whole read (the
/// directory is not what it should be); a document that cannot be parsed is a [`Problem`].
pub fn read_dir(dir: &Path) -> Result<(Objects, Vec<Problem>), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_manifest(p))
        .collect();
    files.sort();
    let mut objects = Objects::default();
    let mut problems = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        read_text(&file, &text, &mut objects, &mut problems);
    }
    Ok((objects, problems))
}

/// Adds the manifests of one file's `text` to `objects` (and what cannot be used to
/// `problems`); `file` names them.
pub fn read_text(file: &Path, text: &str, objects: &mut Objects, problems: &mut Vec<Problem>) {
    let named = format!("{}\0{text}", file.display());
    objects.digest = xxhash_rust::xxh3::xxh3_64_with_seed(named.as_bytes(), objects.digest);
    for (line, doc) in documents(text) {
        parse(file, line, doc, objects, problems);
    }
}

fn is_manifest(p: &Path) -> bool {
    let hidden = p
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
    !hidden && p.is_file() && matches!(ext, "yaml" | "yml" | "json")
}

/// Splits a multi-document YAML text at its `---` lines: each document with the 1-based
/// line it starts on. Documents holding only comments or blank lines are dropped.
pub fn documents(text: &str) -> Vec<(usize, &str)> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end();
        if bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t") {
            docs.push((start_line, &text[start..offset]));
            start = offset + line.len();
            start_line = i + 2;
        }
        offset += line.len();
    }
    docs.push((start_line, &text[start..]));
    docs.retain(|(_, d)| {
        d.lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#') && l.trim() != "...")
    });
    docs
}

fn parse(file: &Path, line: usize, doc: &str, objects: &mut Objects, problems: &mut Vec<Problem>) {
    let mut at = Origin {
        file: file.to_path_buf(),
        line,
        kind: String::new(),
        namespace: String::new(),
        name: String::new(),
    };
    let header: Header = match serde_yaml_ng::from_str(doc) {
        Ok(h) => h,
        Err(e) => {
            at.line = error_line(line, doc, &e);
            problems.push(Problem {
                at,
                reason: "Invalid",
                message: format!("not a manifest: {}", without_location(&e)),
            });
            return;
        }
    };
    let meta = header.metadata.unwrap_or_default();
    at.kind = header.kind.clone().unwrap_or_default();
    at.namespace = meta.namespace.unwrap_or_else(|| DEFAULT_NAMESPACE.into());
    at.name = meta.name.unwrap_or_default();
    let api = header.api_version.unwrap_or_default();
    let group = api.rsplit_once('/').map_or("", |(g, _)| g);
    fn typed<T: serde::de::DeserializeOwned>(
        doc: &str,
        at: Origin,
        problems: &mut Vec<Problem>,
        into: &mut Vec<Located<T>>,
    ) {
        match serde_yaml_ng::from_str::<T>(doc) {
            Ok(obj) => into.push(Located { at, obj }),
            Err(e) => {
                let mut at = at;
                at.line = error_line(at.line, doc, &e);
                problems.push(Problem {
                    reason: "Invalid",
                    message: without_location(&e),
                    at,
                });
            }
        }
    }
    match (group, at.kind.as_str()) {
        (GATEWAY_GROUP, "GatewayClass") => typed(doc, at, problems, &mut objects.classes),
        (GATEWAY_GROUP, "Gateway") => typed(doc, at, problems, &mut objects.gateways),
        (GATEWAY_GROUP, "HTTPRoute") => typed(doc, at, problems, &mut objects.routes),
        (GATEWAY_GROUP, "GRPCRoute") => typed(doc, at, problems, &mut objects.grpc_routes),
        (GATEWAY_GROUP, "TLSRoute") => typed(doc, at, problems, &mut objects.tls_routes),
        (GATEWAY_GROUP, "TCPRoute") => typed(doc, at, problems, &mut objects.tcp_routes),
        (GATEWAY_GROUP, "ReferenceGrant") => typed(doc, at, problems, &mut objects.grants),
        ("", "Service") => typed(doc, at, problems, &mut objects.services),
        ("", "Secret") => typed(doc, at, problems, &mut objects.secrets),
        ("discovery.k8s.io", "EndpointSlice") => typed(doc, at, problems, &mut objects.slices),
        (GATEWAY_GROUP, kind) => problems.push(Problem {
            reason: "UnsupportedValue",
            message: format!("{kind} is not supported by veer's Gateway API translation yet"),
            at,
        }),
        // Deployments, ConfigMaps and the rest of an application's manifests: not veer's.
        _ => tracing::debug!(%at, "manifest kind not used by veer; skipped"),
    }
}

/// The error's words without serde_yaml's "at line L column C" (a line within the
/// document, not the file: the file's line is in the [`Origin`]).
fn without_location(e: &serde_yaml_ng::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) if text[i..].contains(" column ") => text[..i].to_string(),
        _ => text,
    }
}

/// The file line of a YAML error inside a document starting at `doc_line`.
/// The file line of a YAML error in `doc` (which starts on `doc_line`). Counted from the
/// error's offset in `\n`s, as the file's lines are: YAML also breaks lines at a lone
/// `\r`, so its own line number can point past the end of the file (found by the
/// `gateway` fuzz target).
fn error_line(doc_line: usize, doc: &str, e: &serde_yaml_ng::Error) -> usize {
    let Some(at) = e.location() else { return doc_line };
    let before = doc.get(..at.index().min(doc.len())).unwrap_or(doc);
    doc_line + before.matches('\n').count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_keep_their_first_line() {
        let text = "# header\n---\na: 1\n---\n# only a comment\n---\nb: 2\nc: 3\n";
        let docs = documents(text);
        assert_eq!(docs, vec![(3, "a: 1\n"), (7, "b: 2\nc: 3\n")]);
        assert_eq!(documents("a: 1"), vec![(1, "a: 1")]);
    }

    #[test]
    fn an_error_after_lone_carriage_returns_is_placed_on_a_line_of_the_file() {
        let mut objects = Objects::default();
        let mut problems = Vec::new();
        let text = "kind: Service\rmetadata:\r  name: a\r\nspec: [\n";
        read_text(Path::new("x.yaml"), text, &mut objects, &mut problems);
        assert_eq!(
            problems.len(),
            1,
            "{:?}",
            problems.iter().map(|p| &p.message).collect::<Vec<_>>()
        );
        // Two lines and the end after the last one; YAML itself counts five.
        assert!(problems[0].at.line <= 3, "line {}", problems[0].at.line);
    }
}
