//! Finding the ipam sections: walk the paths, parse each file, and pick out every ipam
//! section of type `hereabouts` or `whereabouts`, with what is needed to point back into
//! the file.
//!
//! A YAML file is a stream of Kubernetes objects; a NetworkAttachmentDefinition carries its
//! CNI config as JSON text in `spec.config`. A `.conf`/`.conflist`/`.json` file is a CNI
//! config itself. In both, the ipam section may sit at the top (`ipam`), in a conflist's
//! chained `plugins[N].ipam`, or deeper (a meta plugin's delegates): every object named
//! `ipam` is looked at.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use granit_parser::ScalarStyle;
use serde_json::Value;

use super::CheckError;
use super::analyze::Finding;
use super::json;
use super::rules::Level;
use super::tree::{PosNode, Seg, Spot};
use super::yaml::{self, YNode};

/// The NAD annotation that declares how many free addresses each range must offer.
pub const MIN_FREE_ANNOTATION: &str = "hereabouts.io/min-free";

/// The NAD annotation that declares how many nodes attach to the network: with
/// `node_slice_size`, each needs a slice of its own (it overrides `--nodes` for that NAD).
pub const NODES_ANNOTATION: &str = "hereabouts.io/nodes";

/// The NAD annotations `check` reads: each one's text and where it is.
#[derive(Debug, Clone, Default)]
pub struct Annotations {
    pub min_free: Option<(String, Spot)>,
    pub nodes: Option<(String, Spot)>,
}

/// ipam `type`s that `check` looks at.
pub const IPAM_TYPES: &[&str] = &["hereabouts", "whereabouts"];

const EXTENSIONS: &[&str] = &["yaml", "yml", "json", "conf", "conflist"];

/// One ipam section: a network, as the allocator sees it.
#[derive(Debug, Clone)]
pub struct Site {
    /// The file, as displayed (relative paths stay relative, `/` separators).
    pub file: String,
    /// Who declares it: `NAD namespace/name` or `network NAME` (a CNI config file).
    pub label: String,
    /// The CNI config's (or conflist's) `name`, as a runtime passes it to the plugin; "" when
    /// it has none.
    pub cni_name: String,
    /// Path of the ipam object inside the CNI config, e.g. `plugins[1].ipam`.
    pub ipam_path: Vec<Seg>,
    pub ipam: Value,
    /// The main plugin that delegates to this ipam section (`type`, `isGateway`, …), without
    /// its `ipam`: what it does with the addresses matters (a `bridge` with `isGateway` takes
    /// the range's first address for itself).
    pub plugin: serde_json::Map<String, Value>,
    pub locator: Rc<Locator>,
    /// `hereabouts.io/min-free` on the NAD: its text and where it is.
    pub min_free: Option<(String, Spot)>,
    /// `hereabouts.io/nodes` on the NAD: its text and where it is.
    pub nodes: Option<(String, Spot)>,
}

/// Turns a path in a CNI config into a place in its file.
#[derive(Debug)]
pub struct Locator {
    tree: PosNode,
    embed: Embed,
}

#[derive(Debug, Clone, Copy)]
enum Embed {
    /// The config is the file.
    Direct,
    /// The config is a YAML literal block (`config: |`): its lines are the file's lines from
    /// `first_line` on, indented by `indent` columns.
    Block { first_line: usize, indent: usize },
    /// The config is some other YAML scalar (quoted, folded): its lines do not map one to one,
    /// so everything points at the scalar.
    Scalar(Spot),
}

impl Locator {
    fn map(&self, spot: Spot) -> Spot {
        match self.embed {
            Embed::Direct => spot,
            Embed::Block { first_line, indent } => {
                Spot::new(first_line + spot.line - 1, indent + spot.col)
            }
            Embed::Scalar(at) => at,
        }
    }

    /// Where the value at `path` starts (or the deepest existing node on the way).
    pub fn value_spot(&self, path: &[Seg]) -> Spot {
        self.map(self.tree.deepest(path).spot)
    }

    /// Keys of the object at `path`, in source order, with where each key starts.
    pub fn keys(&self, path: &[Seg]) -> Vec<(String, Spot)> {
        match self.tree.get(path).map(|node| &node.kids) {
            Some(super::tree::Kids::Object(entries)) => {
                entries.iter().map(|(k, spot, _)| (k.clone(), self.map(*spot))).collect()
            }
            _ => Vec::new(),
        }
    }
}

/// What reading the paths produced: the networks, and findings about unreadable content.
#[derive(Debug, Default)]
pub struct Loaded {
    pub files: usize,
    pub sites: Vec<Site>,
    pub findings: Vec<Finding>,
}

/// The path that stands for standard input (`helm template … | hereabouts check -`).
pub const STDIN: &str = "-";

/// Every file under `paths`, in a stable order: directories are walked in name order,
/// hidden entries and files with other extensions are skipped there (a file named explicitly
/// is always read), and nothing is read twice.
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, CheckError> {
    let mut files = Vec::new();
    for path in paths {
        if path.as_os_str() == STDIN {
            files.push(path.clone());
            continue;
        }
        let meta = std::fs::metadata(path).map_err(|e| unreadable(path, e))?;
        if meta.is_dir() {
            walk(path, &mut files)?;
        } else {
            files.push(path.clone());
        }
    }
    let mut seen = HashSet::new();
    files.retain(|file| seen.insert(display(file)));
    Ok(files)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), CheckError> {
    let mut entries = std::fs::read_dir(dir)
        .and_then(|entries| entries.collect::<Result<Vec<_>, _>>())
        .map_err(|e| unreadable(dir, e))?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Symlinked directories are not followed (no cycles); symlinked files are read.
        let kind = entry.file_type().map_err(|e| unreadable(&path, e))?;
        if kind.is_dir() {
            walk(&path, files)?;
        } else if has_config_extension(&path) && std::fs::metadata(&path).is_ok_and(|m| m.is_file())
        {
            files.push(path);
        }
    }
    Ok(())
}

fn has_config_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn unreadable(path: &Path, source: std::io::Error) -> CheckError {
    CheckError::Unreadable { path: display(path), source }
}

/// A path as findings show it: as given, with `/` separators and no leading `./`.
pub fn display(path: &Path) -> String {
    let mut text = path.to_string_lossy().replace('\\', "/");
    while let Some(rest) = text.strip_prefix("./") {
        text = rest.to_string();
    }
    text
}

/// Reads and parses every file; an unreadable file is an error for the whole run.
pub fn load(files: &[PathBuf]) -> Result<Loaded, CheckError> {
    let mut loaded = Loaded { files: files.len(), ..Loaded::default() };
    for path in files {
        let (file, bytes) = if path.as_os_str() == STDIN {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
                .map_err(CheckError::Stdin)?;
            ("<stdin>".to_string(), bytes)
        } else {
            (display(path), std::fs::read(path).map_err(|e| unreadable(path, e))?)
        };
        match String::from_utf8(bytes) {
            Ok(text) => load_text(&file, &text, is_json(path, &text), &mut loaded),
            Err(e) => loaded.findings.push(parse_error(
                &file,
                Spot::new(1, 1),
                format!("not UTF-8 text: {e}"),
            )),
        }
    }
    Ok(loaded)
}

fn is_json(path: &Path, text: &str) -> bool {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("json" | "conf" | "conflist") => true,
        Some("yaml" | "yml") => false,
        _ => text.trim_start().starts_with('{'),
    }
}

/// Parses one file's text into networks and parse findings.
fn load_text(file: &str, text: &str, json: bool, loaded: &mut Loaded) {
    // A byte-order mark is no part of the JSON (serde_json rejects it); YAML allows it.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if json {
        match json::parse(text) {
            Ok((config, tree)) => {
                let label = match config.get("name").and_then(Value::as_str) {
                    Some(name) => format!("network {name}"),
                    None => "network (unnamed)".to_string(),
                };
                let locator = Rc::new(Locator { tree, embed: Embed::Direct });
                let cni_name = config.get("name").and_then(Value::as_str).unwrap_or_default();
                find_sites(
                    file,
                    &Declarer { label: &label, cni_name },
                    &config,
                    &mut Vec::new(),
                    &locator,
                    &Annotations::default(),
                    &mut loaded.sites,
                );
            }
            Err(e) => loaded.findings.push(parse_error(
                file,
                e.spot,
                format!("invalid JSON: {}", e.message),
            )),
        }
        return;
    }
    let (documents, error) = yaml::parse_documents(text);
    for document in &documents {
        load_object(file, document, loaded);
    }
    if let Some(e) = error {
        loaded.findings.push(parse_error(file, e.spot, format!("invalid YAML: {}", e.message)));
    }
}

/// One Kubernetes object (a `List`'s items included).
fn load_object(file: &str, object: &YNode, loaded: &mut Loaded) {
    match object.get("kind").and_then(YNode::as_str) {
        Some("List") => {
            if let Some(items) = object.get("items") {
                for item in items.items() {
                    load_object(file, item, loaded);
                }
            }
        }
        Some("NetworkAttachmentDefinition") => load_nad(file, object, loaded),
        _ => {}
    }
}

fn load_nad(file: &str, nad: &YNode, loaded: &mut Loaded) {
    let metadata = nad.get("metadata");
    let name = metadata.and_then(|m| m.get("name")).and_then(YNode::as_str).unwrap_or("(unnamed)");
    let label = match metadata.and_then(|m| m.get("namespace")).and_then(YNode::as_str) {
        Some(namespace) => format!("NAD {namespace}/{name}"),
        None => format!("NAD {name}"),
    };
    let annotation = |key: &str| {
        metadata
            .and_then(|m| m.get("annotations"))
            .and_then(|a| a.get(key))
            .map(|node| (node.as_str().unwrap_or("").to_string(), node.spot))
    };
    let annotations = Annotations {
        min_free: annotation(MIN_FREE_ANNOTATION),
        nodes: annotation(NODES_ANNOTATION),
    };
    // A NAD without spec.config takes its config from a file on the node: nothing to check.
    let Some(config) = nad.get("spec").and_then(|spec| spec.get("config")) else { return };
    let Some((config_text, style)) = (match &config.value {
        yaml::YValue::Scalar(text, style) => Some((text.as_str(), *style)),
        _ => None,
    }) else {
        let message = format!("{label}: spec.config must be a string holding the CNI config JSON");
        loaded.findings.push(parse_error(file, config.spot, message));
        return;
    };
    let embed = match style {
        // The parser places a literal block at its first non-blank content line; the blank
        // lines before it are the leading newlines of the text.
        ScalarStyle::Literal => {
            let blank = config_text.chars().take_while(|c| *c == '\n').count();
            Embed::Block {
                first_line: config.spot.line.saturating_sub(blank),
                indent: config.spot.col - 1,
            }
        }
        _ => Embed::Scalar(config.spot),
    };
    match json::parse(config_text) {
        Ok((value, tree)) => {
            let locator = Rc::new(Locator { tree, embed });
            let cni_name = value.get("name").and_then(Value::as_str).unwrap_or_default();
            find_sites(
                file,
                &Declarer { label: &label, cni_name },
                &value,
                &mut Vec::new(),
                &locator,
                &annotations,
                &mut loaded.sites,
            );
        }
        Err(e) => {
            let spot = Locator { tree: PosNode::leaf(e.spot), embed }.map(e.spot);
            loaded.findings.push(parse_error(
                file,
                spot,
                format!("{label}: spec.config is not valid JSON: {}", e.message),
            ));
        }
    }
}

/// Who declares the ipam sections found under a config: its label and its CNI name.
struct Declarer<'a> {
    label: &'a str,
    cni_name: &'a str,
}

fn find_sites(
    file: &str,
    declarer: &Declarer<'_>,
    value: &Value,
    path: &mut Vec<Seg>,
    locator: &Rc<Locator>,
    annotations: &Annotations,
    sites: &mut Vec<Site>,
) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                path.push(Seg::Key(key.clone()));
                if key == "ipam" && is_ours(child) {
                    let mut plugin = map.clone();
                    plugin.remove("ipam");
                    sites.push(Site {
                        file: file.to_string(),
                        label: declarer.label.to_string(),
                        cni_name: declarer.cni_name.to_string(),
                        ipam_path: path.clone(),
                        ipam: child.clone(),
                        plugin,
                        locator: Rc::clone(locator),
                        min_free: annotations.min_free.clone(),
                        nodes: annotations.nodes.clone(),
                    });
                } else {
                    find_sites(file, declarer, child, path, locator, annotations, sites);
                }
                path.pop();
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                path.push(Seg::Index(index));
                find_sites(file, declarer, child, path, locator, annotations, sites);
                path.pop();
            }
        }
        _ => {}
    }
}

fn is_ours(ipam: &Value) -> bool {
    ipam.get("type").and_then(Value::as_str).is_some_and(|kind| IPAM_TYPES.contains(&kind))
}

fn parse_error(file: &str, spot: Spot, message: String) -> Finding {
    Finding {
        rule: "parse-error".to_string(),
        level: Level::Error,
        file: file.to_string(),
        spot,
        network: None,
        field: None,
        value: None,
        message,
        related: Vec::new(),
    }
}
