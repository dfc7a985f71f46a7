//! Keeps the configuration's three descriptions in step: the code (`augur_snapshotter::config`),
//! the annotated default file (`systemd/config.toml`) and the reference
//! (`docs/configuration.md`, the table under `## Keys`).
//!
//! - the default file parses, validates, and equals an empty file (it only spells out defaults);
//! - every key the parser accepts is in the default file, and nothing else is;
//! - every key in the default file has a row in the docs table, and every row is a real key;
//! - each row's default column is the value the default file sets.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use augur_snapshotter::config::{Overrides, RawConfig};

const CONFIG: &str = "systemd/config.toml";
const DOCS: &str = "docs/configuration.md";
/// The heading of the key table in the docs.
const KEYS_HEADING: &str = "## Keys";

fn workspace_file(rel: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every leaf of a TOML document as dotted key → value in TOML syntax (`grpc.address` →
/// `"/run/augur/snapshotter.sock"`).
fn toml_leaves(text: &str) -> BTreeMap<String, String> {
    let table: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("{CONFIG} is not valid TOML: {e}"));
    let mut out = BTreeMap::new();
    flatten("", &table, &mut out);
    out
}

fn flatten(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, String>) {
    for (name, value) in table {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match value {
            toml::Value::Table(sub) => flatten(&path, sub, out),
            leaf => {
                out.insert(path, leaf.to_string());
            }
        }
    }
}

/// The text between the first pair of backticks in `cell`.
fn backticked(cell: &str) -> Option<String> {
    let (_, rest) = cell.split_once('`')?;
    let (inner, _) = rest.split_once('`')?;
    Some(inner.to_owned())
}

/// Key → default (backticks removed) for every row of the table under [`KEYS_HEADING`]; the
/// table's columns are key, type, default, rule, flag.
fn documented_keys(md: &str) -> BTreeMap<String, String> {
    let rows: Vec<&str> = md
        .lines()
        .skip_while(|l| l.trim() != KEYS_HEADING)
        .skip(1)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert!(
        rows.len() > 2,
        "{DOCS}: no key table under {KEYS_HEADING:?}"
    );
    let mut out = BTreeMap::new();
    for row in &rows[2..] {
        let cells: Vec<&str> = row
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        assert!(
            cells.len() >= 3,
            "{DOCS}: row {row:?} has fewer than 3 columns"
        );
        let key = backticked(cells[0])
            .unwrap_or_else(|| panic!("{DOCS}: row {row:?} does not start with a `key`"));
        let default = backticked(cells[2])
            .unwrap_or_else(|| panic!("{DOCS}: default of {key} is not in backticks"));
        assert!(
            out.insert(key.clone(), default).is_none(),
            "{DOCS}: {key} has two rows"
        );
    }
    out
}

/// The field names the parser accepts at the top level (`table` = None) or in `[table]`, read
/// from its "unknown field" error, which lists every expected field.
fn accepted_fields(table: Option<&str>) -> Vec<String> {
    let probe = match table {
        None => "augur_probe_not_a_key = 0".to_owned(),
        Some(t) => format!("[{t}]\naugur_probe_not_a_key = 0"),
    };
    let err = RawConfig::parse(&probe).expect_err("an unknown key is rejected");
    let (_, expected) = err.split_once("expected").unwrap_or_else(|| {
        panic!("the parser's error no longer lists the expected fields; update this test: {err}")
    });
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// Every dotted key the parser accepts, descending into the tables the default file has.
fn accepted_keys(shipped: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for name in accepted_fields(None) {
        let prefix = format!("{name}.");
        if shipped.keys().any(|k| k.starts_with(&prefix)) {
            keys.extend(
                accepted_fields(Some(&name))
                    .into_iter()
                    .map(|f| format!("{prefix}{f}")),
            );
        } else {
            keys.insert(name);
        }
    }
    keys
}

fn diff(what: &str, a: &BTreeSet<String>, b: &BTreeSet<String>) -> Vec<String> {
    a.difference(b).map(|k| format!("{k}: {what}")).collect()
}

#[test]
fn default_config_is_valid_and_equals_an_empty_one() {
    let text = workspace_file(CONFIG);
    let shipped = RawConfig::parse(&text)
        .unwrap_or_else(|e| panic!("{CONFIG} does not parse: {e}"))
        .validate(Overrides::default())
        .unwrap_or_else(|e| panic!("{CONFIG} does not validate: {e}"));
    let defaults = RawConfig::parse("")
        .unwrap()
        .validate(Overrides::default())
        .unwrap();
    assert_eq!(
        shipped, defaults,
        "{CONFIG} must set every key to its default"
    );
}

#[test]
fn default_config_has_exactly_the_keys_the_daemon_accepts() {
    let shipped = toml_leaves(&workspace_file(CONFIG));
    let shipped_keys: BTreeSet<String> = shipped.keys().cloned().collect();
    let accepted = accepted_keys(&shipped);
    let mut problems = diff(
        &format!("accepted by the daemon but missing from {CONFIG}"),
        &accepted,
        &shipped_keys,
    );
    problems.extend(diff(
        "in the file but not accepted by the daemon",
        &shipped_keys,
        &accepted,
    ));
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn docs_table_lists_exactly_the_keys_of_the_default_config() {
    let shipped: BTreeSet<String> = toml_leaves(&workspace_file(CONFIG)).into_keys().collect();
    let documented: BTreeSet<String> = documented_keys(&workspace_file(DOCS)).into_keys().collect();
    let mut problems = diff(
        &format!("in {CONFIG} but has no row in {DOCS}"),
        &shipped,
        &documented,
    );
    problems.extend(diff(
        &format!("documented in {DOCS} but not in {CONFIG}"),
        &documented,
        &shipped,
    ));
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn docs_defaults_are_the_values_of_the_default_config() {
    let shipped = toml_leaves(&workspace_file(CONFIG));
    let documented = documented_keys(&workspace_file(DOCS));
    for (key, doc_default) in &documented {
        if let Some(value) = shipped.get(key) {
            assert_eq!(
                doc_default, value,
                "{DOCS}: default of {key} differs from {CONFIG}"
            );
        }
    }
}
