//! The rule catalogue and the user's settings: which rules run, at which level.
//!
//! Rule ids are stable: CI configs, rules files and code-scanning history refer to them.
//! The range rules are the allocator core's own `validate` findings (their ids come from the
//! component); the catalogue lists them so they can be documented and re-levelled.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How much a finding matters. `Off` disables a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Off,
    Warning,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Off => "off",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "off" => Some(Level::Off),
            "warning" => Some(Level::Warning),
            "error" => Some(Level::Error),
            _ => None,
        }
    }
}

/// Where a rule is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The allocator component's `validate`.
    Core,
    /// `check` itself (using the component's `plan`, `overlaps` and `fit-nodes` for anything
    /// about ranges).
    Check,
}

pub struct Rule {
    pub id: &'static str,
    pub level: Level,
    pub origin: Origin,
    /// One line: what is wrong and why it matters.
    pub summary: &'static str,
}

const fn rule(id: &'static str, level: Level, origin: Origin, summary: &'static str) -> Rule {
    Rule { id, level, origin, summary }
}

use Level::{Error, Warning};
use Origin::{Check, Core};

/// Every rule, in the order the documentation lists them.
pub const RULES: &[Rule] = &[
    rule(
        "parse-error",
        Error,
        Check,
        "A file, or a NAD's `spec.config`, is not valid YAML/JSON; what follows the error is not checked.",
    ),
    rule(
        "ipam-type-error",
        Error,
        Check,
        "An ipam key holds the wrong type of value (a number where a CIDR string belongs); the plugin rejects the config.",
    ),
    rule(
        "ipam-too-large",
        Error,
        Core,
        "More `ipRanges` items (128) or items of one `exclude` list (1024) than a config may hold; the plugin rejects the config.",
    ),
    rule(
        "unknown-ipam-key",
        Warning,
        Check,
        "An ipam key the plugin does not know, so it is ignored: usually a typo of a known key.",
    ),
    rule(
        "range-missing",
        Error,
        Core,
        "The ipam section has neither `range` nor `ipRanges`: there is nothing to hand out.",
    ),
    rule(
        "range-invalid",
        Error,
        Core,
        "A `range` is neither a CIDR (`10.0.0.0/24`) nor the range-end form (`10.0.0.5-10.0.0.25/24`).",
    ),
    rule("range-start-invalid", Error, Core, "`range_start` is not an IP address."),
    rule("range-end-invalid", Error, Core, "`range_end` is not an IP address."),
    rule(
        "range-start-outside-range",
        Error,
        Core,
        "`range_start` lies outside its range (Whereabouts ignores it, and so does the plugin, logging it).",
    ),
    rule(
        "range-end-outside-range",
        Error,
        Core,
        "`range_end` lies outside its range (ignored, as Whereabouts does, and logged).",
    ),
    rule(
        "range-start-after-end",
        Error,
        Core,
        "`range_start` is above `range_end` (Whereabouts drops the end; so does the plugin, logging it).",
    ),
    rule(
        "range-start-not-usable",
        Error,
        Core,
        "`range_start` is the network or broadcast address (ignored, as Whereabouts does: the range starts at the first usable address).",
    ),
    rule(
        "range-end-not-usable",
        Error,
        Core,
        "`range_end` is the network or broadcast address (ignored, as Whereabouts does: the range ends at the last usable address).",
    ),
    rule(
        "range-key-without-range",
        Error,
        Core,
        "A top-level `range_start`, `range_end` or `exclude` with no top-level `range`: never read (each `ipRanges` item carries its own).",
    ),
    rule(
        "range-crosses-ipv4-mapped",
        Error,
        Core,
        "An IPv6 range reaches into `::ffff:0:0/96`: Whereabouts' walk stops before it, so the range is smaller than written.",
    ),
    rule(
        "exclude-leading-zeros",
        Error,
        Core,
        "An `exclude` with leading zeros: read here, but Whereabouts' exclude parser rejects it and fails every ADD.",
    ),
    rule(
        "node-slice-size-invalid",
        Error,
        Core,
        "`node_slice_size` (Fast IPAM) cannot cut the range: not a prefix length, shorter than the range's, slices with no usable address, more than 16384 slices, or several ranges.",
    ),
    rule("exclude-invalid", Error, Core, "An `exclude` entry is neither a CIDR nor an address."),
    rule(
        "exclude-outside-range",
        Error,
        Core,
        "An `exclude` lies wholly outside its range, so it excludes nothing: usually a typo.",
    ),
    rule(
        "exclude-partly-outside-range",
        Error,
        Core,
        "An `exclude` reaches beyond its range: only part of it applies.",
    ),
    rule("gateway-invalid", Error, Core, "`gateway` is not an IP address."),
    rule(
        "range-empty",
        Error,
        Core,
        "Nothing is left to hand out once excludes and `range_start`/`range_end` apply.",
    ),
    rule(
        "gateway-allocatable",
        Warning,
        Core,
        "The gateway lies in the allocatable space and is not excluded: a pod can be given the gateway's address. `\"exclude_gateway\": true` fixes it (Whereabouts ignores the key).",
    ),
    rule(
        "exclude-gateway-without-gateway",
        Error,
        Core,
        "`exclude_gateway` is true but the ipam section sets no `gateway` (or one that does not parse): nothing is excluded.",
    ),
    rule(
        "store-unchosen",
        Error,
        Check,
        "Run with `--flat-file` (your nodes' flat file, or `none`): a NAD, or a `type: whereabouts` config, that chooses no store once that file is merged (no `kubernetes.kubeconfig`, `etcd_host`, `datastore` or `data_dir`): every ADD fails, as the plugin never falls back to the node-local store for a pod.",
    ),
    rule(
        "networks-overlap",
        Warning,
        Check,
        "Two networks with different `network_name`s have overlapping ranges: each can hand out the same addresses (fine only if they never share an L2 segment).",
    ),
    rule(
        "overlapping-ranges-disabled",
        Error,
        Check,
        "Ranges of one `network_name` overlap while `enable_overlapping_ranges` is false: both pools can hand out the same address.",
    ),
    rule(
        "capacity-below-need",
        Error,
        Check,
        "A range offers fewer addresses than declared by the `hereabouts.io/min-free` annotation or `--min-free`.",
    ),
    rule(
        "min-free-invalid",
        Error,
        Check,
        "The `hereabouts.io/min-free` annotation is not a whole number.",
    ),
    rule(
        "ipv6-range-small",
        Warning,
        Check,
        "An IPv6 range offers fewer addresses than the threshold (default 254, what an IPv4 /24 offers): IPv6 space is plentiful, so this is usually a prefix-length typo.",
    ),
    rule(
        "node-slices-fewer-than-nodes",
        Warning,
        Check,
        "`node_slice_size` cuts the range into fewer slices than the nodes declared by the `hereabouts.io/nodes` annotation or `--nodes`: the nodes beyond get no slice, and their pods no address (the core's `fit-nodes` names a size, or a range, that fits).",
    ),
    rule(
        "nodes-invalid",
        Error,
        Check,
        "The `hereabouts.io/nodes` annotation is not a whole number.",
    ),
];

pub fn find(id: &str) -> Option<&'static Rule> {
    RULES.iter().find(|rule| rule.id == id)
}

/// The closest rule id to a mistyped one.
pub fn suggest(id: &str) -> Option<&'static str> {
    RULES
        .iter()
        .map(|rule| (strsim::levenshtein(id, rule.id), rule.id))
        .filter(|(distance, _)| *distance <= 3)
        .min()
        .map(|(_, id)| id)
}

/// The default for `ipv6-range-small`: what an IPv4 /24 offers.
pub const DEFAULT_IPV6_MIN_CAPACITY: u128 = 254;

/// The rules file found in the working directory when `--rules` is not given.
pub const RULES_FILE: &str = ".hereabouts-check.json";

/// A rules file: `{"rules": {"ID": "off|warning|error"}, "minFree": N, "nodes": N,
/// "ipv6MinCapacity": N}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RulesFile {
    #[serde(default)]
    rules: BTreeMap<String, String>,
    min_free: Option<u64>,
    nodes: Option<u32>,
    ipv6_min_capacity: Option<u64>,
}

/// What the user asked for; the defaults check everything at the catalogue's levels.
#[derive(Debug, Clone)]
pub struct Settings {
    levels: BTreeMap<String, Level>,
    /// Free addresses every range must offer unless its NAD declares its own need.
    pub min_free: Option<u128>,
    /// Nodes every network with `node_slice_size` must have a slice for, unless its NAD
    /// declares its own count (`hereabouts.io/nodes`).
    pub nodes: Option<u32>,
    pub ipv6_min_capacity: u128,
    /// The flat file the nodes have (`--flat-file`), for `store-unchosen`; unset: the rule
    /// does not run (the nodes' flat file usually names the store).
    pub node_flat_file: Option<NodeFlatFile>,
}

/// What flat file the nodes have (`--flat-file PATH|none`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeFlatFile {
    None,
    File(PathBuf),
}

impl NodeFlatFile {
    pub fn parse(text: &str) -> Self {
        // A path given on the command line is the user's, relative to where they run check;
        // the flat-file reader takes absolute paths only (a NAD's may not be relative).
        match text {
            "none" => NodeFlatFile::None,
            path => NodeFlatFile::File(std::path::absolute(path).unwrap_or_else(|_| path.into())),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            levels: BTreeMap::new(),
            min_free: None,
            nodes: None,
            ipv6_min_capacity: DEFAULT_IPV6_MIN_CAPACITY,
            node_flat_file: None,
        }
    }
}

/// Settings that cannot be used: a rules file or a `--rule` flag, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("rules file {}: {source}", path.display())]
    RulesFileUnreadable { path: PathBuf, source: std::io::Error },
    #[error("rules file {}: {source}", path.display())]
    RulesFileInvalid { path: PathBuf, source: serde_json::Error },
    #[error("rules file {}: {problem}", path.display())]
    RulesFileEntry { path: PathBuf, problem: LevelError },
    #[error("--rule {flag}: expected ID=off|warning|error")]
    FlagSyntax { flag: String },
    #[error("--rule {flag}: {problem}")]
    Flag { flag: String, problem: LevelError },
}

/// A rule id and level that do not make a setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LevelError {
    #[error("unknown rule `{id}` (did you mean `{near}`?)")]
    UnknownRuleNear { id: String, near: &'static str },
    #[error("unknown rule `{id}` (`hereabouts check --list-rules` lists them)")]
    UnknownRule { id: String },
    #[error("`{level}` is not a level: use off, warning or error")]
    NotALevel { level: String },
}

impl Settings {
    /// Settings from a rules file (`explicit`, else `.hereabouts-check.json` in `cwd` if there
    /// is one), then `ID=LEVEL` overrides from the command line.
    pub fn load(
        explicit: Option<&Path>,
        cwd: &Path,
        overrides: &[String],
    ) -> Result<Self, SettingsError> {
        let mut settings = Settings::default();
        let file: Option<PathBuf> = match explicit {
            Some(path) => Some(path.to_path_buf()),
            None => Some(cwd.join(RULES_FILE)).filter(|path| path.is_file()),
        };
        if let Some(path) = file {
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(source) => return Err(SettingsError::RulesFileUnreadable { path, source }),
            };
            let parsed: RulesFile = match serde_json::from_str(&text) {
                Ok(parsed) => parsed,
                Err(source) => return Err(SettingsError::RulesFileInvalid { path, source }),
            };
            for (id, level) in &parsed.rules {
                if let Err(problem) = settings.set(id, level) {
                    return Err(SettingsError::RulesFileEntry { path, problem });
                }
            }
            settings.min_free = parsed.min_free.map(u128::from);
            settings.nodes = parsed.nodes;
            if let Some(capacity) = parsed.ipv6_min_capacity {
                settings.ipv6_min_capacity = capacity.into();
            }
        }
        for flag in overrides {
            let Some((id, level)) = flag.split_once('=') else {
                return Err(SettingsError::FlagSyntax { flag: flag.clone() });
            };
            settings
                .set(id, level)
                .map_err(|problem| SettingsError::Flag { flag: flag.clone(), problem })?;
        }
        Ok(settings)
    }

    fn set(&mut self, id: &str, level: &str) -> Result<(), LevelError> {
        if find(id).is_none() {
            return Err(match suggest(id) {
                Some(near) => LevelError::UnknownRuleNear { id: id.to_string(), near },
                None => LevelError::UnknownRule { id: id.to_string() },
            });
        }
        let level = Level::parse(level)
            .ok_or_else(|| LevelError::NotALevel { level: level.to_string() })?;
        self.levels.insert(id.to_string(), level);
        Ok(())
    }

    /// The level a finding of `rule` is reported at (`found`: the level it was found at).
    pub fn level(&self, rule: &str, found: Level) -> Level {
        self.levels.get(rule).copied().unwrap_or(found)
    }

    /// Whether a rule runs at all (saves the component calls of disabled rules).
    pub fn enabled(&self, rule: &str) -> bool {
        self.levels.get(rule) != Some(&Level::Off)
    }
}

/// The catalogue as a Markdown table (`--list-rules`; docs/check.md holds the same rows).
pub fn table() -> String {
    let mut out = String::from(
        "| Rule | Default | Decided by | What it means |\n| --- | --- | --- | --- |\n",
    );
    for rule in RULES {
        let origin = match rule.origin {
            Origin::Core => "core `validate`",
            Origin::Check => "check",
        };
        out.push_str(&format!(
            "| `{}` | {} | {origin} | {} |\n",
            rule.id,
            rule.level.as_str(),
            rule.summary
        ));
    }
    out
}
