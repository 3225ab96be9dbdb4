//! `WARREN_<SECTION>__<KEY>` environment overrides applied to the TOML tree before it is read.

use super::*;

/// Applies one `WARREN_A__B__0__C=value` variable to the TOML tree; other variables are ignored.
///
/// Variables without the double-underscore separator (`WARREN_PORT`, `WARREN_LOG`) belong to the
/// command-line flags and are not configuration paths.
pub(super) fn apply_env_override(
    tree: &mut toml::Value,
    name: &str,
    raw: &str,
) -> Result<(), ConfigError> {
    let Some(path) = name.strip_prefix(ENV_PREFIX) else {
        return Ok(());
    };
    if !path.contains(ENV_PATH_SEPARATOR) {
        return Ok(());
    }
    let segments: Vec<String> = path
        .split(ENV_PATH_SEPARATOR)
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let bad = |reason: &str| ConfigError::new(name, reason);
    let (last, parents) = segments.split_last().ok_or_else(|| bad("empty path"))?;
    let mut node = tree;
    for segment in parents {
        node = child_mut(node, segment).ok_or_else(|| bad("no such configuration section"))?;
    }
    let table = node
        .as_table_mut()
        .ok_or_else(|| bad("the parent of this key is not a section"))?;
    let value = match table.get(last.as_str()) {
        Some(toml::Value::String(_)) => toml::Value::String(raw.to_string()),
        _ => parse_env_value(raw),
    };
    table.insert(last.clone(), value);
    Ok(())
}

/// The `WARREN_*` variables sorted so that array entries come in index order
/// (`WARREN_APPS__2__…` after `WARREN_APPS__1__…`, `__10__` after `__9__`): an entry can only be
/// appended after the one before it exists, whatever order the environment lists them in.
pub(super) fn in_application_order(
    env: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect();
    vars.sort_by_cached_key(|(name, _)| {
        name.split(ENV_PATH_SEPARATOR)
            .map(|segment| match segment.parse::<u64>() {
                Ok(index) => (0, index, String::new()),
                Err(_) => (1, 0, segment.to_string()),
            })
            .collect::<Vec<_>>()
    });
    vars
}

/// The fields an app cannot do without; an app added from the environment must set each one.
pub(super) const REQUIRED_APP_FIELDS: [&str; 3] = ["id", "key", "secret"];

/// Refuses an app that lacks a required field with a message naming the variables to set
/// (serde alone would say "missing field `id` in `apps`", without the index).
pub(super) fn check_env_added_apps(tree: &toml::Value) -> Result<(), ConfigError> {
    let Some(apps) = tree.get("apps").and_then(toml::Value::as_array) else {
        return Ok(());
    };
    for (index, app) in apps.iter().enumerate() {
        let Some(app) = app.as_table() else { continue };
        if let Some(missing) = REQUIRED_APP_FIELDS
            .iter()
            .find(|field| !app.contains_key(**field))
        {
            let vars = REQUIRED_APP_FIELDS
                .map(|f| format!("{ENV_PREFIX}APPS__{index}__{}", f.to_ascii_uppercase()))
                .join(", ");
            return Err(ConfigError::new(
                format!("apps[{index}].{missing}"),
                format!("missing; an app needs id, key and secret (from the environment: {vars})"),
            ));
        }
    }
    Ok(())
}

/// The child `segment` of a table, or entry `segment` of an array (one past the end appends a
/// new, empty table, so that apps can be added from the environment).
pub(super) fn child_mut<'a>(
    node: &'a mut toml::Value,
    segment: &str,
) -> Option<&'a mut toml::Value> {
    match node {
        toml::Value::Table(table) => Some(
            table
                .entry(segment.to_string())
                .or_insert_with(|| toml::Value::Table(Default::default())),
        ),
        toml::Value::Array(items) => {
            let index: usize = segment.parse().ok()?;
            if index == items.len() {
                items.push(toml::Value::Table(Default::default()));
            }
            items.get_mut(index)
        }
        _ => None,
    }
}

/// Reads an environment value as a TOML literal (number, boolean) or, failing that, a string.
pub(super) fn parse_env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}
