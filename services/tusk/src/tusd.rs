//! tusd's command line, read as Tusk's: a tusd user replaces the binary and keeps the flags.
//!
//! Go's flag package takes `-name`, `-name=value`, `-name value` and the same with two
//! dashes; a bool flag never takes the next argument, only `-name=false`. [`translate`]
//! rewrites such a command line into Tusk's (two dashes, Tusk's names and value forms)
//! before clap reads it, so tusd's spellings work without appearing in `--help`. [`TUSD`]
//! is the single table behind it and behind docs/tusd-migration.md ([`migration_table`]).

use std::ffi::OsString;

use crate::cli::FLAGS;

/// What Tusk makes of one tusd flag.
pub enum Meaning {
    /// The Tusk flag with the same meaning (the name may differ).
    Flag(&'static str),
    /// Accepted without effect: the note says what Tusk does instead.
    Ignored,
    /// Refused at start: the note says what to use instead.
    Refused,
}

/// How tusd's value becomes Tusk's.
#[derive(Clone, Copy)]
pub enum Value {
    /// A Go bool flag: `-name` or `-name=true` sets the Tusk switch; `-name=false` is tusd's
    /// default, and Tusk's.
    Switch,
    /// Passed on as it is.
    Same,
    /// tusd counts seconds (`86400`); Tusk takes a duration: a bare number becomes seconds.
    Seconds,
    /// A Go duration (`1m30s`, `1.5s`, `250ms`): one with a fraction or in `µs` (which
    /// Tusk's duration reader does not take) is written out in nanoseconds.
    GoDuration,
    /// tusd adds the slashes a base path lacks (`files` serves `/files/`); Tusk requires them.
    BasePath,
    /// tusd takes a regular expression; Tusk a list of origins and `https://*.` patterns.
    /// `.*` becomes `*`, a list passes, anything else that reads as a regex is refused.
    OriginRegex,
}

pub struct TusdFlag {
    pub name: &'static str,
    pub value: Value,
    pub meaning: Meaning,
    /// tusd's default, as its `-help` prints it.
    pub tusd_default: &'static str,
    /// Choosing this storage flag also chooses the storage (`--storage`), as in tusd.
    pub implies_storage: Option<&'static str>,
    pub note: &'static str,
}

const fn flag(name: &'static str, tusk: &'static str, value: Value) -> TusdFlag {
    TusdFlag {
        name,
        value,
        meaning: Meaning::Flag(tusk),
        tusd_default: "",
        implies_storage: None,
        note: "",
    }
}

const fn ignored(name: &'static str, value: Value, note: &'static str) -> TusdFlag {
    TusdFlag {
        name,
        value,
        meaning: Meaning::Ignored,
        tusd_default: "",
        implies_storage: None,
        note,
    }
}

const fn refused(name: &'static str, value: Value, note: &'static str) -> TusdFlag {
    TusdFlag {
        name,
        value,
        meaning: Meaning::Refused,
        tusd_default: "",
        implies_storage: None,
        note,
    }
}

impl TusdFlag {
    const fn default(self, tusd_default: &'static str) -> Self {
        Self {
            tusd_default,
            ..self
        }
    }

    const fn note(self, note: &'static str) -> Self {
        Self { note, ..self }
    }

    const fn storage(self, storage: &'static str) -> Self {
        Self {
            implies_storage: Some(storage),
            ..self
        }
    }
}

use Value::{BasePath, GoDuration, OriginRegex, Same, Seconds, Switch};

const NO_AZURE: &str = "Tusk has no Azure storage: use a shared disk, S3 or GCS";
const NO_GRPC_TLS: &str = "gRPC hooks over TLS are not supported: keep the hook server on a trusted network, or use `-hooks-http` with an https URL (and `-hooks-ca-file`)";
const NO_PPROF: &str =
    "Tusk is not a Go program: profile it with perf (`perf record -g -p PID`); /metrics is on the admin listener";

/// Every flag of tusd v2 (`cmd/tusd/cli/flags.go`), in its order.
pub const TUSD: &[TusdFlag] = &[
    flag("host", "host", Same)
        .default("0.0.0.0")
        .note("Tusk listens on loopback unless told: give `-host 0.0.0.0` to listen on every address"),
    flag("port", "port", Same).default("8080"),
    flag("unix-sock", "unix-socket", Same),
    flag("base-path", "base-path", BasePath).default("/files/"),
    flag("behind-proxy", "behind-proxy", Switch).default("false").note(
        "one header family only: X-Forwarded-Host/Proto (default) or Forwarded (`server.proxy_headers`)",
    ),
    ignored(
        "enable-h2c",
        Switch,
        "always on: HTTP/2 without TLS is served to clients that start with it (prior knowledge)",
    ),
    flag("tls-certificate", "tls-certificate", Same),
    flag("tls-key", "tls-key", Same),
    flag("tls-mode", "tls-mode", Same).default("tls12"),
    ignored(
        "enable-experimental-protocol",
        Switch,
        "always on: the IETF draft, interop versions 3 to 9, chosen by each request's `Upload-Draft-Interop-Version`",
    ),
    flag("disable-download", "disable-download", Switch).default("false"),
    flag("disable-termination", "disable-termination", Switch).default("false"),
    flag("disable-concatenation", "disable-concatenation", Switch).default("false"),
    flag("max-size", "max-size", Same).default("0"),
    flag("disable-cors", "disable-cors", Switch).default("false"),
    flag("cors-allow-origin", "cors-allow-origin", OriginRegex).default(".*").note(
        "a list of origins and `https://*.example.com` patterns, not a regular expression: `.*` is read as `*`, another regex is refused",
    ),
    flag("cors-allow-credentials", "cors-allow-credentials", Switch).default("false"),
    ignored(
        "cors-allow-methods",
        Same,
        "Tusk's preflight already allows every method it serves",
    ),
    flag("cors-allow-headers", "cors-allow-headers", Same),
    flag("cors-max-age", "cors-max-age", Seconds)
        .default("86400")
        .note("a number is read as seconds; Tusk also takes a duration (`24h`)"),
    flag("cors-expose-headers", "cors-expose-headers", Same),
    flag("upload-dir", "upload-dir", Same).default("./data"),
    ignored(
        "filelock-holder-poll-interval",
        Same,
        "nothing polls: a request that wants an upload being written asks the writer through the coordinator, at once",
    ),
    ignored(
        "filelock-acquirer-poll-interval",
        Same,
        "nothing polls: the writer hands the upload over as soon as it committed",
    ),
    refused(
        "dir-perms",
        Same,
        "Tusk creates directories with the process umask: start it under `umask 027` (or the mode you need)",
    ),
    refused(
        "file-perms",
        Same,
        "Tusk creates files with the process umask: start it under `umask 027` (or the mode you need)",
    ),
    flag("s3-bucket", "s3-bucket", Same)
        .storage("s3")
        .note("selects S3 storage, as in tusd; credentials from the AWS default chain"),
    flag("s3-object-prefix", "s3-object-prefix", Same),
    flag("s3-endpoint", "s3-endpoint", Same),
    flag("s3-part-size", "s3-part-size", Same).default("52428800"),
    flag("s3-min-part-size", "s3-min-part-size", Same).default("5242880"),
    refused(
        "s3-max-buffered-parts",
        Same,
        "Tusk bounds the bytes it buffers for S3, not the parts: `storage.s3.buffer_budget` (`TUSK_STORAGE__S3__BUFFER_BUDGET`)",
    ),
    ignored(
        "s3-disable-content-hashes",
        Switch,
        "the AWS SDK's integrity checksums stay on",
    ),
    refused(
        "s3-disable-ssl",
        Switch,
        "give `-s3-endpoint` an `http://` URL",
    ),
    flag("s3-concurrent-part-uploads", "s3-parts-in-flight", Same).default("10"),
    refused(
        "s3-transfer-acceleration",
        Switch,
        "give `-s3-endpoint https://s3-accelerate.amazonaws.com`",
    ),
    refused(
        "s3-log-api-calls",
        Switch,
        "log the SDK's calls with `-log-level info,aws_smithy_runtime=debug`",
    ),
    flag("gcs-bucket", "gcs-bucket", Same)
        .storage("gcs")
        .note("selects GCS storage, as in tusd; credentials from Google's default chain (`GOOGLE_APPLICATION_CREDENTIALS`)"),
    flag("gcs-object-prefix", "gcs-object-prefix", Same),
    flag("gcs-endpoint", "gcs-endpoint", Same),
    refused("azure-storage", Same, NO_AZURE),
    refused("azure-container-access-type", Same, NO_AZURE),
    refused("azure-blob-access-tier", Same, NO_AZURE),
    refused("azure-object-prefix", Same, NO_AZURE),
    refused("azure-endpoint", Same, NO_AZURE),
    flag("hooks-enabled-events", "hooks-enabled-events", Same)
        .default("pre-create,post-create,post-receive,post-terminate,post-finish")
        .note("Tusk adds pre-access (before every request on an upload) and enables every event but it by default"),
    flag("progress-hooks-interval", "hooks-post-receive-interval", GoDuration).default("1s"),
    flag("hooks-dir", "hooks-dir", Same),
    flag("hooks-http", "hooks-http", Same).note("the JSON body is Tusk's own, not tusd's: see the README's hooks section"),
    flag("hooks-http-forward-headers", "hooks-forward-headers", Same)
        .note("forwarded in the event's `request.headers`; tusd sets them on the hook request itself"),
    flag("hooks-http-retry", "hooks-retries", Same).default("3"),
    flag("hooks-http-backoff", "hooks-backoff", GoDuration)
        .default("1s")
        .note("the first pause; it doubles after each retry"),
    flag("hooks-http-timeout", "hooks-timeout", GoDuration).default("15s"),
    ignored(
        "hooks-http-size-limit",
        Same,
        "a hook's answer is read up to 64 KiB",
    ),
    refused(
        "hooks-http-skip-verify",
        Switch,
        "certificates are always verified: give the hook server's CA with `-hooks-ca-file`",
    ),
    flag("hooks-grpc", "hooks-grpc", Same)
        .note("tusd's hook service and messages, plaintext only"),
    flag("hooks-grpc-retry", "hooks-retries", Same).default("3"),
    flag("hooks-grpc-backoff", "hooks-backoff", GoDuration)
        .default("1s")
        .note("the first pause; it doubles after each retry"),
    refused("hooks-grpc-secure", Switch, NO_GRPC_TLS),
    refused("hooks-grpc-server-tls-certificate", Same, NO_GRPC_TLS),
    refused("hooks-grpc-client-tls-certificate", Same, NO_GRPC_TLS),
    refused("hooks-grpc-client-tls-key", Same, NO_GRPC_TLS),
    flag("hooks-grpc-forward-headers", "hooks-forward-headers", Same)
        .note("forwarded in the event's HTTPRequest.Header"),
    refused(
        "hooks-plugin",
        Same,
        "Go plugins cannot load into Tusk: serve the hook over HTTP (`-hooks-http`) or as an executable (`-hooks-dir`)",
    ),
    ignored(
        "expose-metrics",
        Switch,
        "always on, on the admin listener (`-admin-port`, default 8081), not on the upload port",
    ),
    flag("metrics-path", "metrics-path", Same).default("/metrics"),
    refused("expose-pprof", Switch, NO_PPROF),
    refused("pprof-path", Same, NO_PPROF),
    refused("pprof-block-profile-rate", Same, NO_PPROF),
    refused("pprof-mutex-profile-rate", Same, NO_PPROF),
    ignored(
        "show-greeting",
        Switch,
        "GET on a path outside the uploads answers 404; there is no greeting page",
    ),
    flag("version", "version", Switch).note("prints the version and the git commit"),
    ignored(
        "verbose",
        Switch,
        "each request's outcome is logged at `-log-level debug`",
    ),
    ignored(
        "show-startup-logs",
        Switch,
        "the settings in effect are logged at start at info level",
    ),
    flag("log-format", "log-format", Same).default("text"),
    flag("network-timeout", "network-timeout", GoDuration).default("1m0s"),
    flag("shutdown-timeout", "shutdown-drain", GoDuration).default("10s"),
    flag("acquire-lock-timeout", "lease-wait", GoDuration)
        .default("20s")
        .note("then 423 Locked"),
    ignored(
        "request-completion-timeout",
        Same,
        "a request its client stops is committed at once: what arrived is kept",
    ),
];

/// The Tusk command line for `args` (the program name first), and a warning for each tusd
/// flag accepted without effect. A refused flag, or a value Tusk cannot read the tusd way,
/// is an error that says what to use instead.
pub fn translate(args: Vec<OsString>) -> Result<(Vec<OsString>, Vec<String>), String> {
    let mut out = Vec::with_capacity(args.len());
    let mut warnings = Vec::new();
    let mut rest = args.into_iter();
    out.extend(rest.next());
    let rest: Vec<OsString> = rest.collect();
    // Only the server reads tusd's flags: another subcommand keeps its own command line.
    let serving = match rest.first().and_then(|a| a.to_str()) {
        Some(first) if !first.starts_with('-') => first == "serve",
        _ => true,
    };
    if !serving {
        out.extend(rest);
        return Ok((out, warnings));
    }
    let command = crate::cli::command();
    let takes_value = |long: &str| {
        command
            .get_arguments()
            .find(|a| a.get_long() == Some(long))
            .is_some_and(|a| a.get_action().takes_values())
    };
    let mut storage_chosen = false;
    let mut implied_storage = None;
    let mut pending: Option<Value> = None;
    let mut args = rest.into_iter();
    while let Some(arg) = args.next() {
        if let Some(value) = pending.take() {
            out.push(convert(value, &arg)?);
            continue;
        }
        let Some(text) = arg.to_str().filter(|t| is_long_flag(t)) else {
            if arg == "--" {
                out.push(arg);
                out.extend(args.by_ref());
                break;
            }
            out.push(arg);
            continue;
        };
        let body = text.trim_start_matches('-');
        let (name, inline) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (body, None),
        };
        if name == "storage" {
            storage_chosen = true;
        }
        let Some(tusd) = TUSD.iter().find(|f| f.name == name) else {
            // A Tusk flag (or an unknown one, which clap then names) with two dashes.
            out.push(format!("--{body}").into());
            if inline.is_none() && takes_value(name) {
                pending = Some(Same);
            }
            continue;
        };
        match (&tusd.meaning, tusd.value) {
            (Meaning::Refused, _) => {
                return Err(format!(
                    "tusd's -{name} is not supported by Tusk: {}",
                    tusd.note
                ))
            }
            (Meaning::Ignored, value) => {
                warnings.push(format!(
                    "tusd's -{name} has no effect in Tusk: {}",
                    tusd.note
                ));
                if inline.is_none() && !matches!(value, Switch) {
                    args.next();
                }
            }
            (Meaning::Flag(tusk), Switch) => match inline {
                None | Some("true") | Some("1") | Some("t") | Some("TRUE") | Some("True") => {
                    out.push(format!("--{tusk}").into());
                }
                Some("false") | Some("0") | Some("f") | Some("FALSE") | Some("False") => {}
                Some(other) => return Err(format!("-{name}: {other:?} is not true or false")),
            },
            (Meaning::Flag(tusk), value) => {
                out.push(format!("--{tusk}").into());
                match inline {
                    Some(inline) => out.push(convert(value, &OsString::from(inline))?),
                    None => pending = Some(value),
                }
                if let Some(storage) = tusd.implies_storage {
                    implied_storage = Some(storage);
                }
            }
        }
    }
    if let (Some(storage), false) = (implied_storage, storage_chosen) {
        out.extend(["--storage".into(), storage.into()]);
    }
    Ok((out, warnings))
}

/// `-name`, `--name` or `-name=value` with a name of two characters or more (a single
/// letter, like `-h`, is clap's own short flag).
fn is_long_flag(arg: &str) -> bool {
    let body = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'));
    let name = body.map(|b| b.split('=').next().unwrap_or(b));
    name.is_some_and(|n| {
        n.len() >= 2
            && n.starts_with(|c: char| c.is_ascii_alphabetic())
            && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

fn convert(value: Value, arg: &OsString) -> Result<OsString, String> {
    let Some(text) = arg.to_str() else {
        return Ok(arg.clone());
    };
    match value {
        Value::Seconds if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(format!("{text}s").into())
        }
        Value::GoDuration => match go_duration_nanos(text) {
            None => Err(format!("{text:?} is not a duration (e.g. 30s, 1m30s, 1.5s)")),
            Some(nanos) if text.contains(['.', 'µ', 'μ']) => Ok(format!("{nanos}ns").into()),
            Some(_) => Ok(arg.clone()),
        },
        Value::BasePath => {
            let trimmed = text.trim_matches('/');
            Ok(if trimmed.is_empty() {
                "/".into()
            } else {
                format!("/{trimmed}/").into()
            })
        }
        Value::OriginRegex if text == ".*" => Ok("*".into()),
        Value::OriginRegex if text.contains(['^', '$', '\\', '(', ')', '|', '+', '?', '[', '{']) || text.contains(".*") => Err(format!(
            "-cors-allow-origin {text:?} is a regular expression; Tusk takes a comma-separated list of origins and subdomain patterns instead, e.g. https://app.example.com,https://*.example.com"
        )),
        _ => Ok(arg.clone()),
    }
}

/// A Go duration in nanoseconds: a sequence of decimal numbers with units (`ns`, `us`,
/// `µs`, `ms`, `s`, `m`, `h`), or a bare `0`.
fn go_duration_nanos(text: &str) -> Option<u128> {
    if text == "0" {
        return Some(0);
    }
    let mut total = 0f64;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&end| end > 0)?;
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += number * scale;
        rest = &rest[unit_end..];
    }
    Some(total.round() as u128)
}

/// docs/tusd-migration.md's table: every tusd flag, the Tusk flag that does the same (with
/// its setting and both defaults), or why not.
pub fn migration_table() -> String {
    let mut out = String::from(
        "| tusd flag | Tusk | tusd default | Tusk default | notes |\n|---|---|---|---|---|\n",
    );
    for f in TUSD {
        let (tusk, tusk_default) = match f.meaning {
            Meaning::Flag("version") => ("`--version`".to_string(), String::new()),
            Meaning::Flag(tusk) => {
                let setting = FLAGS.iter().find(|s| s.flag == tusk);
                match setting {
                    Some(s) => (
                        format!("`--{tusk}` (`{}`)", s.key),
                        format!("`{}`", s.default),
                    ),
                    None => (format!("`--{tusk}`"), String::new()),
                }
            }
            Meaning::Ignored => ("accepted, no effect".to_string(), String::new()),
            Meaning::Refused => ("**refused**".to_string(), String::new()),
        };
        let tusd_default = if f.tusd_default.is_empty() {
            String::new()
        } else {
            format!("`{}`", f.tusd_default)
        };
        out.push_str(&format!(
            "| `-{}` | {tusk} | {tusd_default} | {tusk_default} | {} |\n",
            f.name, f.note
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(line: &str) -> Result<Vec<String>, String> {
        let args = line.split(' ').map(OsString::from).collect();
        translate(args).map(|(out, _)| {
            out.into_iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        })
    }

    #[test]
    fn go_spellings_become_tusk_flags() {
        assert_eq!(
            run("tusd -port 1080 -host=0.0.0.0 --base-path /up/ -behind-proxy -disable-download=false -cors-max-age 600").unwrap(),
            [
                "tusd", "--port", "1080", "--host", "0.0.0.0", "--base-path", "/up/",
                "--behind-proxy", "--cors-max-age", "600s"
            ]
        );
        assert_eq!(
            run("tusk -upload-dir ./data -shutdown-timeout=5s -acquire-lock-timeout 1s").unwrap(),
            [
                "tusk",
                "--upload-dir",
                "./data",
                "--shutdown-drain",
                "5s",
                "--lease-wait",
                "1s"
            ]
        );
    }

    #[test]
    fn go_durations_and_base_paths_read_as_tusd_reads_them() {
        assert_eq!(
            run("tusk -shutdown-timeout=1.5s -network-timeout 1m0s -hooks-http-backoff 250ms -base-path files").unwrap(),
            [
                "tusk", "--shutdown-drain", "1500000000ns", "--network-timeout", "1m0s",
                "--hooks-backoff", "250ms", "--base-path", "/files/"
            ]
        );
        assert!(run("tusk -acquire-lock-timeout 5").is_err());
        assert!(run("tusk -acquire-lock-timeout 5parsecs").is_err());
        assert_eq!(go_duration_nanos("0"), Some(0));
        assert_eq!(go_duration_nanos("1h2m3.5s"), Some(3_723_500_000_000));
    }

    #[test]
    fn a_value_that_looks_like_a_flag_stays_a_value() {
        assert_eq!(
            run("tusk -base-path -files- -port 1").unwrap(),
            ["tusk", "--base-path", "/-files-/", "--port", "1"]
        );
    }

    #[test]
    fn a_bucket_chooses_its_storage_unless_told() {
        assert_eq!(
            run("tusk -s3-bucket b").unwrap(),
            ["tusk", "--s3-bucket", "b", "--storage", "s3"]
        );
        assert_eq!(
            run("tusk -gcs-bucket b --storage fs").unwrap(),
            ["tusk", "--gcs-bucket", "b", "--storage", "fs"]
        );
    }

    #[test]
    fn ignored_flags_warn_and_drop_their_value() {
        let (out, warnings) = translate(
            "tusk -verbose=false -filelock-holder-poll-interval 3s -port 1"
                .split(' ')
                .map(OsString::from)
                .collect(),
        )
        .unwrap();
        assert_eq!(out, ["tusk", "--port", "1"]);
        assert_eq!(warnings.len(), 2);
    }

    #[test]
    fn refused_flags_say_what_to_use() {
        let e = run("tusk -azure-storage c").unwrap_err();
        assert!(e.contains("-azure-storage") && e.contains("S3"), "{e}");
        let e = run("tusk -cors-allow-origin ^https://a\\.example$").unwrap_err();
        assert!(e.contains("regular expression"), "{e}");
        assert_eq!(
            run("tusk -cors-allow-origin .*").unwrap(),
            ["tusk", "--cors-allow-origin", "*"]
        );
    }

    #[test]
    fn other_subcommands_are_left_alone() {
        assert_eq!(
            run("tusk bench -scenario small").unwrap(),
            ["tusk", "bench", "-scenario", "small"]
        );
    }

    #[test]
    fn every_tusk_flag_named_exists() {
        let command = crate::cli::command();
        let help = command.clone().render_long_help().to_string();
        for f in TUSD {
            if let Meaning::Flag(tusk) = f.meaning {
                assert!(
                    help.contains(&format!("--{tusk}")),
                    "-{} maps to --{tusk}, which `tusk --help` does not list",
                    f.name
                );
            }
            let unique = TUSD.iter().filter(|g| g.name == f.name).count();
            assert_eq!(unique, 1, "-{} twice", f.name);
        }
    }

    #[test]
    fn the_migration_guide_has_the_current_table() {
        let doc = include_str!("../../../docs/tusd-migration.md");
        assert!(
            doc.contains(&migration_table()),
            "docs/tusd-migration.md's table is stale: paste `tusk config-reference --tusd`"
        );
    }
}
