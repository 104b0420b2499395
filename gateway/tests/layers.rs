//! The gateway's modules form layers, not a circle: this test reads the module graph from the
//! source (every `crate::…`, `super::…` and child-module path a module names) and fails on any
//! cycle, printing it. ARCHITECTURE.md draws the layers it keeps.
//!
//! Conventions it relies on (and so enforces):
//! * a module names another by a path (`crate::hub::Hub`, `super::frame::client_id`); a child
//!   that needs something of its parent's family names the sibling that defines it, never an
//!   item re-exported by the parent;
//! * test code sits in `#[cfg(test)]` modules (inline at the end of a file, or a file of its own)
//!   and is left out: tests may reach across layers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's path inside the crate: `[]` is the crate root, `["http", "api"]` is `http::api`.
type ModPath = Vec<String>;

struct Module {
    file: PathBuf,
    /// Source without comments and without its `#[cfg(test)]` inline modules.
    code: String,
    /// Child modules declared with `mod NAME;` (test-only ones excluded).
    children: BTreeSet<String>,
}

fn name(path: &ModPath) -> String {
    if path.is_empty() {
        "crate".to_owned()
    } else {
        path.join("::")
    }
}

/// Drops `//` comments (doc comments included) and string literals' contents, so that prose and
/// strings that mention a path are not taken for a use.
fn strip_comments_and_strings(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                out.push('"');
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                out.push('"');
            }
            _ => out.push(c),
        }
    }
    out
}

/// Removes every `#[cfg(test)] mod NAME { … }` block, and returns the names of `#[cfg(test)] mod
/// NAME;` declarations (test-only files).
fn strip_test_modules(code: &str) -> (String, BTreeSet<String>) {
    let mut out = String::new();
    let mut test_files = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = rest[at + "#[cfg(test)]".len()..].trim_start();
        let Some(declaration) = after.strip_prefix("mod ").or_else(|| after.strip_prefix("pub(crate) mod ")) else {
            // `#[cfg(test)]` on something else: keep it.
            out.push_str("#[cfg(test)]");
            rest = &rest[at + "#[cfg(test)]".len()..];
            continue;
        };
        let end_of_name = declaration.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(declaration.len());
        let tail = declaration[end_of_name..].trim_start();
        if let Some(after_semicolon) = tail.strip_prefix(';') {
            test_files.insert(declaration[..end_of_name].to_owned());
            rest = after_semicolon;
            continue;
        }
        // An inline block: skip to its matching brace.
        let open = tail.find('{').expect("a test module has a body");
        let mut depth = 0usize;
        let mut end = tail.len();
        for (i, c) in tail[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    (out, test_files)
}

/// `mod NAME;` declarations in `code`.
fn declared_children(code: &str) -> BTreeSet<String> {
    let mut children = BTreeSet::new();
    for line in code.lines() {
        let line = line.trim();
        let line = line.strip_prefix("pub ").or_else(|| line.strip_prefix("pub(crate) ")).unwrap_or(line);
        if let Some(rest) = line.strip_prefix("mod ") {
            if let Some(name) = rest.strip_suffix(';') {
                children.insert(name.trim().to_owned());
            }
        }
    }
    children
}

fn load(src: &Path) -> BTreeMap<ModPath, Module> {
    let mut modules = BTreeMap::new();
    load_module(src, &src.join("lib.rs"), Vec::new(), &mut modules);
    modules
}

fn load_module(src: &Path, file: &Path, path: ModPath, modules: &mut BTreeMap<ModPath, Module>) {
    let source = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let (code, test_files) = strip_test_modules(&strip_comments_and_strings(&source));
    let children: BTreeSet<String> = declared_children(&code).difference(&test_files).cloned().collect();
    // Children of `a/mod.rs`, `a.rs` or `lib.rs` live in `a/`, `a/` or the source root.
    let dir = if path.is_empty() { src.to_path_buf() } else { src.join(path.join("/")) };
    for child in &children {
        let mut child_path = path.clone();
        child_path.push(child.clone());
        let flat = dir.join(format!("{child}.rs"));
        let nested = dir.join(child).join("mod.rs");
        let child_file = if flat.exists() { flat } else { nested };
        load_module(src, &child_file, child_path, modules);
    }
    modules.insert(path, Module { file: file.to_path_buf(), code, children });
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every path (as segments) that starts at one of `roots` in `code`, with `a::{b, c::d}` groups
/// expanded.
fn paths_from(code: &str, root: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let pattern = format!("{root}::");
    let mut search = 0;
    while let Some(rel) = code[search..].find(&pattern) {
        let at = search + rel;
        search = at + pattern.len();
        // Whole-word match: `my_crate::` is not `crate::`.
        if code[..at].chars().next_back().is_some_and(|c| is_ident(c) || c == ':') {
            continue;
        }
        let mut prefix = vec![root.to_owned()];
        collect(&code[at + pattern.len()..], &mut prefix, &mut found);
    }
    found
}

/// Reads `seg::seg::{…}` at the start of `text` onto `prefix`, pushing each full path.
fn collect(text: &str, prefix: &mut Vec<String>, found: &mut Vec<Vec<String>>) {
    let text = text.trim_start();
    if let Some(group) = text.strip_prefix('{') {
        let mut depth = 1;
        let mut item_start = 0;
        let mut items = Vec::new();
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        items.push(&group[item_start..i]);
                        break;
                    }
                }
                ',' if depth == 1 => {
                    items.push(&group[item_start..i]);
                    item_start = i + 1;
                }
                _ => {}
            }
        }
        for item in items {
            let mut path = prefix.clone();
            collect(item, &mut path, found);
        }
        return;
    }
    let end = text.find(|c: char| !is_ident(c)).unwrap_or(text.len());
    if end == 0 {
        found.push(prefix.clone());
        return;
    }
    prefix.push(text[..end].to_owned());
    match text[end..].strip_prefix("::") {
        Some(rest) => collect(rest, prefix, found),
        None => found.push(prefix.clone()),
    }
}

/// The modules each module names.
fn edges(modules: &BTreeMap<ModPath, Module>) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let mut graph = BTreeMap::new();
    for (path, module) in modules {
        let mut targets = BTreeSet::new();
        let mut named: Vec<(ModPath, Vec<String>)> = Vec::new();
        for segments in paths_from(&module.code, "crate") {
            named.push((Vec::new(), segments[1..].to_vec()));
        }
        if let Some((_, parent)) = path.split_last() {
            for segments in paths_from(&module.code, "super") {
                named.push((parent.to_vec(), segments[1..].to_vec()));
            }
        }
        for child in &module.children {
            for segments in paths_from(&module.code, child) {
                named.push((path.clone(), segments));
            }
        }
        for segments in paths_from(&module.code, "self") {
            named.push((path.clone(), segments[1..].to_vec()));
        }
        for (base, segments) in named {
            // The longest prefix that is a module is the one named.
            let mut target = base.clone();
            for segment in segments {
                let mut next = target.clone();
                next.push(segment);
                if !modules.contains_key(&next) {
                    break;
                }
                target = next;
            }
            if &target != path {
                targets.insert(target);
            }
        }
        graph.insert(path.clone(), targets);
    }
    graph
}

/// A cycle in `graph`, if there is one, as the modules along it.
fn find_cycle(graph: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Option<Vec<ModPath>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &ModPath,
        graph: &BTreeMap<ModPath, BTreeSet<ModPath>>,
        marks: &mut BTreeMap<ModPath, Mark>,
        stack: &mut Vec<ModPath>,
    ) -> Option<Vec<ModPath>> {
        marks.insert(node.clone(), Mark::Open);
        stack.push(node.clone());
        for next in &graph[node] {
            match marks.get(next) {
                Some(Mark::Open) => {
                    let start = stack.iter().position(|m| m == next).expect("an open module is on the stack");
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some(cycle) = visit(next, graph, marks, stack) {
                        return Some(cycle);
                    }
                }
            }
        }
        stack.pop();
        marks.insert(node.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if !marks.contains_key(node) {
            if let Some(cycle) = visit(node, graph, &mut marks, &mut Vec::new()) {
                return Some(cycle);
            }
        }
    }
    None
}

#[test]
fn the_gateway_modules_form_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = load(&src);
    assert!(modules.len() > 20, "the module tree was read ({} modules)", modules.len());
    let graph = edges(&modules);
    if let Some(cycle) = find_cycle(&graph) {
        let steps: Vec<String> = cycle.iter().map(|m| format!("{} ({})", name(m), modules[m].file.display())).collect();
        panic!("the gateway's modules import each other in a circle:\n  {}", steps.join("\n  -> "));
    }
}

#[test]
fn the_reader_sees_uses_through_groups_and_children() {
    let code = "use crate::hub::{Hub, link::{Outbound, OfGroup}};\nfn f() { chat::render(); super::frame::parse(); }";
    let mut from_crate = paths_from(code, "crate");
    from_crate.sort();
    assert_eq!(
        from_crate,
        [
            vec!["crate", "hub", "Hub"],
            vec!["crate", "hub", "link", "OfGroup"],
            vec!["crate", "hub", "link", "Outbound"]
        ]
    );
    assert_eq!(paths_from(code, "chat"), [vec!["chat", "render"]]);
    assert_eq!(paths_from(code, "super"), [vec!["super", "frame", "parse"]]);
    let (kept, test_files) =
        strip_test_modules("use a;\n#[cfg(test)]\nmod properties;\n#[cfg(test)]\nmod tests {\n use super::*; { }\n}\n");
    assert_eq!(kept.trim(), "use a;");
    assert!(test_files.contains("properties"));
    assert_eq!(strip_comments_and_strings("a // crate::x\nb \"crate::y\""), "a \nb \"\"");
}

/// Longest file in `gateway/src`, and longest function: past these a file holds more than one
/// concept, or a function more than one step.
const MAX_FILE_LINES: usize = 400;
const MAX_FUNCTION_LINES: usize = 80;

/// Every `fn` of `source` with its length in lines (from its `fn` line to its closing brace at
/// the same indentation; rustfmt's layout).
fn function_lengths(source: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = source.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let signature = ["pub(crate) ", "pub(super) ", "pub ", ""]
            .iter()
            .find_map(|vis| trimmed.strip_prefix(vis))
            .map(|rest| rest.strip_prefix("async ").unwrap_or(rest))
            .and_then(|rest| rest.strip_prefix("fn "));
        let Some(signature) = signature else { continue };
        let name: String = signature.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        // The body opens where the signature ends; a declaration without one ends in `;`.
        let Some(open) =
            (i..lines.len()).find(|&j| lines[j].trim_end().ends_with('{') || lines[j].trim_end().ends_with(';'))
        else {
            continue;
        };
        if lines[open].trim_end().ends_with(';') {
            continue;
        }
        let closing = format!("{indent}}}");
        if let Some(end) = (open + 1..lines.len()).find(|&j| lines[j].trim_end() == closing) {
            found.push((name, end - i + 1));
        }
    }
    found
}

#[test]
fn every_file_holds_one_concept_and_every_function_one_step() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut too_long = Vec::new();
    for (_, module) in load(&src) {
        let source = std::fs::read_to_string(&module.file).unwrap();
        let lines = source.lines().count();
        if lines > MAX_FILE_LINES {
            too_long.push(format!("{}: {lines} lines (at most {MAX_FILE_LINES})", module.file.display()));
        }
        for (name, length) in function_lengths(&source) {
            if length > MAX_FUNCTION_LINES {
                too_long.push(format!(
                    "{}: fn {name}, {length} lines (at most {MAX_FUNCTION_LINES})",
                    module.file.display()
                ));
            }
        }
    }
    assert!(too_long.is_empty(), "split these:\n  {}", too_long.join("\n  "));
}

#[test]
fn function_lengths_are_read_from_the_layout() {
    let source = "fn a() {\n    x();\n}\n\npub(crate) async fn b(\n    y: u8,\n) -> u8 {\n    y\n}\n    fn c();\n";
    assert_eq!(function_lengths(source), [("a".to_owned(), 3), ("b".to_owned(), 5)]);
}

/// The names of the structs and enums `code` defines.
fn defined_types(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in code.lines() {
        let line = line.trim_start();
        let line = ["pub(crate) ", "pub(super) ", "pub "].iter().find_map(|vis| line.strip_prefix(vis)).unwrap_or(line);
        if let Some(rest) = line.strip_prefix("struct ").or_else(|| line.strip_prefix("enum ")) {
            names.insert(rest.chars().take_while(|c| is_ident(*c)).collect());
        }
    }
    names
}

/// The types `code` has inherent `impl Name {` blocks for.
fn inherent_impls(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in code.lines() {
        let Some(rest) = line.trim_start().strip_prefix("impl") else { continue };
        // Past generic parameters (`impl<T> Name<T>`), if any.
        let rest = match rest.strip_prefix('<') {
            Some(generic) => generic.split_once("> ").map_or("", |(_, name)| name),
            None => rest.strip_prefix(' ').unwrap_or(""),
        };
        if rest.contains(" for ") || !rest.trim_end().ends_with('{') {
            continue;
        }
        names.insert(rest.chars().take_while(|c| is_ident(*c)).collect());
    }
    names
}

/// A type's methods live in the module that defines it. Tools that read the module graph from
/// the compiler's view (cargo-modules) count a method as part of its type's module, so an
/// `impl Hub` elsewhere would make the type's module use whatever that method uses: a circle
/// the import lines alone do not show.
#[test]
fn a_types_methods_live_with_the_type() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = load(&src);
    let defined: BTreeMap<&ModPath, BTreeSet<String>> =
        modules.iter().map(|(path, module)| (path, defined_types(&module.code))).collect();
    let mut elsewhere = Vec::new();
    for (path, module) in &modules {
        for name in inherent_impls(&module.code) {
            if !defined[path].contains(&name) && defined.values().any(|types| types.contains(&name)) {
                elsewhere.push(format!("impl {name} in {}", module.file.display()));
            }
        }
    }
    assert!(elsewhere.is_empty(), "methods away from their type:\n  {}", elsewhere.join("\n  "));
}
