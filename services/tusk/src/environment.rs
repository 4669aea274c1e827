//! Which environment variables are configuration.
//!
//! Only the nested form `TUSK_<SECTION>__<KEY>` is: Kubernetes injects service-link variables
//! (`TUSK_SERVICE_HOST`, `TUSK_PORT_80_TCP_ADDR`, ...) into every pod of a namespace that has
//! a Service named `tusk...`, and a server that read those as settings would refuse to start.
//! A variable of the nested form that names no setting is refused, naming the variable, so a
//! misspelling never passes silently.

use std::collections::{BTreeMap, BTreeSet};

const PREFIX: &str = "TUSK_";

/// The environment split into the variables that are settings and the ignored `TUSK_*` names.
#[derive(Debug, Default, PartialEq)]
pub struct SettingVariables {
    pub settings: BTreeMap<String, String>,
    pub ignored: Vec<String>,
}

/// Splits `vars`, given the dotted keys that exist (`server.port`, `storage.s3.bucket`).
pub fn settings_in(
    vars: impl IntoIterator<Item = (String, String)>,
    known_keys: &BTreeSet<String>,
) -> Result<SettingVariables, String> {
    let mut found = SettingVariables::default();
    for (name, value) in vars {
        // `name` stays as given: the `config` crate's environment source reads it.
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(key) = nested_key(rest) else {
            found.ignored.push(name);
            continue;
        };
        if !known_keys.contains(&key) {
            return Err(unknown_setting(&name, &key, known_keys));
        }
        found.settings.insert(name, value);
    }
    found.ignored.sort();
    Ok(found)
}

/// `SERVER__PORT` → `server.port`; `None` unless a section of letters and digits comes first.
fn nested_key(rest: &str) -> Option<String> {
    let (section, key) = rest.split_once("__")?;
    let plain_word = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric());
    if !plain_word(section) || key.is_empty() {
        return None;
    }
    Some(
        format!("{section}.{key}")
            .replace("__", ".")
            .to_ascii_lowercase(),
    )
}

fn unknown_setting(name: &str, key: &str, known_keys: &BTreeSet<String>) -> String {
    let parent = key.rsplit_once('.').map_or("", |(parent, _)| parent);
    let siblings: Vec<&str> = known_keys
        .iter()
        .filter_map(|k| k.strip_prefix(parent)?.strip_prefix('.'))
        .filter(|rest| !rest.contains('.'))
        .collect();
    if siblings.is_empty() {
        let sections: BTreeSet<&str> = known_keys
            .iter()
            .filter_map(|k| k.split('.').next())
            .collect();
        let sections: Vec<&str> = sections.into_iter().collect();
        format!(
            "environment variable {name} names no setting ({key}); sections are: {}",
            sections.join(", ")
        )
    } else {
        format!(
            "environment variable {name} names no setting ({key}); settings under {parent} are: {}",
            siblings.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> BTreeSet<String> {
        [
            "server.port",
            "server.host",
            "storage.s3.bucket",
            "hooks.events",
        ]
        .into_iter()
        .map(String::from)
        .collect()
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn nested_variables_are_settings() {
        let found = settings_in(
            vars(&[
                ("TUSK_SERVER__PORT", "9000"),
                ("TUSK_STORAGE__S3__BUCKET", "b"),
                ("HOME", "/root"),
            ]),
            &known(),
        )
        .unwrap();
        assert_eq!(
            found.settings,
            BTreeMap::from([
                ("TUSK_SERVER__PORT".to_string(), "9000".to_string()),
                ("TUSK_STORAGE__S3__BUCKET".to_string(), "b".to_string()),
            ])
        );
        assert!(found.ignored.is_empty());
    }

    /// What Kubernetes injects for a Service `tusk` (port `http` 80) and `tusk-metrics`.
    #[test]
    fn service_link_variables_are_ignored() {
        let links = vars(&[
            ("TUSK_SERVICE_HOST", "10.0.0.7"),
            ("TUSK_SERVICE_PORT", "80"),
            ("TUSK_SERVICE_PORT_HTTP", "80"),
            ("TUSK_PORT", "tcp://10.0.0.7:80"),
            ("TUSK_PORT_80_TCP", "tcp://10.0.0.7:80"),
            ("TUSK_PORT_80_TCP_PROTO", "tcp"),
            ("TUSK_PORT_80_TCP_PORT", "80"),
            ("TUSK_PORT_80_TCP_ADDR", "10.0.0.7"),
            ("TUSK_METRICS_SERVICE_HOST", "10.0.0.8"),
            ("TUSK_METRICS_PORT_8081_TCP_ADDR", "10.0.0.8"),
            ("TUSK_A__B_SERVICE_HOST", "10.0.0.9"),
        ]);
        let mut names: Vec<String> = links.iter().map(|(k, _)| k.clone()).collect();
        names.sort();
        let found = settings_in(links, &known());
        // A Service named `tusk-a--b` (consecutive hyphens) is the one shape that reads as
        // nested; it is refused like any other unknown nested name, which says what to rename.
        let err = found.unwrap_err();
        assert!(err.contains("TUSK_A__B_SERVICE_HOST"), "{err}");
        names.retain(|n| n != "TUSK_A__B_SERVICE_HOST");
        let found =
            settings_in(names.iter().map(|n| (n.clone(), "x".to_string())), &known()).unwrap();
        assert!(found.settings.is_empty());
        assert_eq!(found.ignored, names);
    }

    #[test]
    fn a_misspelled_nested_variable_is_refused_naming_it() {
        let err = settings_in(vars(&[("TUSK_SERVER__PROT", "9000")]), &known()).unwrap_err();
        assert_eq!(
            err,
            "environment variable TUSK_SERVER__PROT names no setting (server.prot); \
             settings under server are: host, port"
        );
        let err = settings_in(vars(&[("TUSK_SERVR__PORT", "9000")]), &known()).unwrap_err();
        assert_eq!(
            err,
            "environment variable TUSK_SERVR__PORT names no setting (servr.port); \
             sections are: hooks, server, storage"
        );
    }

    #[test]
    fn malformed_nested_forms_are_not_settings() {
        let found = settings_in(
            vars(&[("TUSK___PORT", "1"), ("TUSK_SERVER__", "1"), ("TUSK_", "1")]),
            &known(),
        )
        .unwrap();
        assert!(found.settings.is_empty());
        assert_eq!(found.ignored.len(), 3);
    }
}
