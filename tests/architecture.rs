//! The house's layers, checked from the code (issue 20): every module's `crate::…`,
//! `super::…` and child-module paths are collected from `src/`, and the test fails when a
//! module imports from a floor above its own, or when modules import each other in a loop.
//! The layer table is written once, here; lib.rs's module map mirrors it (checked too).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules by floor, bottom up. A module may import from its own floor or below.
const LAYERS: &[(u8, &str, &[&str])] = &[
    (
        1,
        "base",
        &[
            "config",
            "gateway",
            "error",
            "clock",
            "lifecycle",
            "ratelimit",
            "stream",
            "proxy_header",
        ],
    ),
    (2, "telemetry handles", &["metrics", "access_log"]),
    (3, "model", &["routing", "balance", "state", "snapshot"]),
    (4, "data plane", &["upstream", "proxy", "listeners", "scrape", "health"]),
    (5, "control plane", &["control"]),
    (6, "admin plane", &["admin"]),
    (7, "assembly", &["runtime", "demo"]),
];

/// Items at the crate root that are not modules: `#[macro_export]` macros, by their home.
const ROOT_ITEMS: &[(&str, &str)] = &[("warn_limited", "ratelimit")];

fn floor_of(top: &str) -> Option<(u8, &'static str)> {
    LAYERS
        .iter()
        .find(|(_, _, mods)| mods.contains(&top))
        .map(|(f, name, _)| (*f, *name))
}

/// `src/proxy/h1/server.rs` → `proxy::h1::server`; `src/state/mod.rs` → `state`.
fn module_path(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments (doc links name modules without importing them) and
/// without its unit tests (`#[cfg(test)]` to the end of the file: there `super::` is the
/// file itself).
fn code(text: &str) -> String {
    let text = text.find("#[cfg(test)]").map_or(text, |i| &text[..i]);
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The paths that follow `prefix` (`crate::`, `super::`, `child::`): `a::b::c` → "a::b::c",
/// and each member of a `{a, b::c}` group.
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue; // part of a longer path (`x::crate::`, `foo_super::`)
        }
        if let Some(group) = rest.strip_prefix('{') {
            let body = &group[..group.find('}').unwrap_or(group.len())];
            for item in body.split(',') {
                let item = item.trim();
                if !item.is_empty() {
                    out.push(item.split(" as ").next().unwrap().trim().to_string());
                }
            }
        } else {
            let mut path = String::new();
            let mut s = rest;
            loop {
                let id = ident_at(s);
                if id.is_empty() {
                    break;
                }
                if !path.is_empty() {
                    path.push_str("::");
                }
                path.push_str(id);
                s = &s[id.len()..];
                match s.strip_prefix("::") {
                    Some(next) if next.starts_with(|c: char| c.is_ascii_lowercase()) => s = next,
                    _ => break,
                }
            }
            out.push(path);
        }
    }
    out
}

/// The longest known module that `path` (from the crate root) names.
fn resolve(modules: &BTreeSet<String>, path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find(|m| modules.contains(m))
        .or_else(|| {
            ROOT_ITEMS
                .iter()
                .find(|(item, _)| *item == parts[0])
                .map(|(_, home)| home.to_string())
        })
}

struct House {
    /// module → the modules it imports (itself excluded).
    imports: BTreeMap<String, BTreeSet<String>>,
}

fn house() -> House {
    // ARCH_SRC points the checker at another tree (an older checkout, to compare).
    let src = std::env::var_os("ARCH_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let mut all = Vec::new();
    files(&src, &mut all);
    // main.rs is the binary: it reaches the library as `veer::`, not `crate::`.
    all.retain(|f| f.file_name().is_some_and(|n| n != "main.rs"));
    // lib.rs is the module map and its re-exports, not a room of its own.
    all.retain(|f| f != &src.join("lib.rs"));
    let modules: BTreeSet<String> = all
        .iter()
        .map(|f| module_path(&src, f))
        .filter(|m| !m.is_empty())
        .collect();
    let mut imports = BTreeMap::new();
    for file in &all {
        let module = module_path(&src, file);
        if module.is_empty() {
            continue; // lib.rs: the module map and re-exports
        }
        let text = code(&std::fs::read_to_string(file).unwrap());
        let mut seen = BTreeSet::new();
        for p in paths_after(&text, "crate::") {
            if let Some(m) = resolve(&modules, &p) {
                seen.insert(m);
            }
        }
        // `super::` from `a::b::c` is `a::b`; a file's own children are named bare.
        let parent = module.rsplit_once("::").map_or("", |(p, _)| p).to_string();
        for p in paths_after(&text, "super::") {
            let full = if parent.is_empty() { p } else { format!("{parent}::{p}") };
            if let Some(m) = resolve(&modules, &full) {
                seen.insert(m);
            }
        }
        let children: Vec<&String> = modules
            .iter()
            .filter(|m| m.rsplit_once("::").is_some_and(|(p, _)| p == module))
            .collect();
        for child in children {
            let name = child.rsplit_once("::").unwrap().1;
            if !paths_after(&text, &format!("{name}::")).is_empty() {
                seen.insert(child.clone());
            }
        }
        // A module's own tests (`mod tests` in a folder of its own) and itself do not count.
        seen.retain(|m| *m != module && !m.starts_with(&format!("{module}::tests")));
        if module.ends_with("::tests") {
            seen.remove(module.rsplit_once("::").unwrap().0);
        }
        imports.insert(module, seen);
    }
    House { imports }
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap()
}

fn upward_imports(house: &House) -> Vec<String> {
    let mut out = Vec::new();
    for (module, deps) in &house.imports {
        let Some((floor, layer)) = floor_of(top(module)) else {
            out.push(format!(
                "src module `{module}` has no floor in tests/architecture.rs LAYERS"
            ));
            continue;
        };
        for dep in deps {
            let Some((dep_floor, dep_layer)) = floor_of(top(dep)) else {
                continue;
            };
            if dep_floor > floor {
                out.push(format!(
                    "`{module}` ({layer}, floor {floor}) imports `crate::{dep}` ({dep_layer}, floor {dep_floor}): \
                     a module imports only from its own floor or below"
                ));
            }
        }
    }
    out
}

/// Every set of modules that import each other in a loop (Tarjan's strongly connected
/// components of more than one module).
fn cycles(house: &House) -> Vec<Vec<String>> {
    struct Tarjan<'h> {
        graph: &'h BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'h str, usize>,
        low: BTreeMap<&'h str, usize>,
        stack: Vec<&'h str>,
        on_stack: BTreeSet<&'h str>,
        out: Vec<Vec<String>>,
    }
    impl<'h> Tarjan<'h> {
        fn visit(&mut self, v: &'h str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.graph.contains_key(w) {
                    continue;
                }
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    comp.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph: &house.imports,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in house.imports.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out
}

#[test]
fn no_module_imports_from_a_higher_floor() {
    let problems = upward_imports(&house());
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn no_modules_import_each_other_in_a_loop() {
    let house = house();
    let found = cycles(&house);
    let shown: Vec<String> = found
        .iter()
        .map(|c| {
            let ties: Vec<String> = c
                .iter()
                .flat_map(|m| {
                    house.imports[m]
                        .iter()
                        .filter(|d| c.contains(d))
                        .map(move |d| format!("{m} -> {d}"))
                })
                .collect();
            format!("{} modules: {}", c.len(), ties.join(", "))
        })
        .collect();
    assert!(found.is_empty(), "import cycles:\n{}", shown.join("\n"));
}

/// lib.rs declares exactly the modules of the table, and its module map names each.
#[test]
fn the_layer_table_and_the_lib_module_map_agree() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let declared: BTreeSet<&str> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';'))
        .collect();
    let tabled: BTreeSet<&str> = LAYERS.iter().flat_map(|(_, _, m)| m.iter().copied()).collect();
    assert_eq!(declared, tabled, "lib.rs `pub mod`s vs tests/architecture.rs LAYERS");
    let map: String = lib
        .lines()
        .filter(|l| l.starts_with("//!"))
        .collect::<Vec<_>>()
        .join("\n");
    for (_, layer, mods) in LAYERS {
        assert!(map.contains(layer), "lib.rs's module map has no `{layer}` floor");
        for m in *mods {
            let folder = format!("{m}/");
            assert!(
                map.split_whitespace().any(|w| w == *m || w == folder),
                "lib.rs's module map does not list `{m}`"
            );
        }
    }
}

/// The checker itself: an upward import and a loop planted in a scratch copy are found.
#[test]
fn the_checker_finds_a_planted_upward_import_and_loop() {
    let mut house = house();
    house
        .imports
        .get_mut("proxy::http")
        .unwrap()
        .insert("admin".to_string());
    let problems = upward_imports(&house);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("`proxy::http` (data plane, floor 4) imports `crate::admin`")),
        "{problems:?}"
    );
    house
        .imports
        .get_mut("admin")
        .unwrap()
        .insert("proxy::http".to_string());
    assert!(cycles(&house).iter().any(|c| c.contains(&"admin".to_string())));
}
